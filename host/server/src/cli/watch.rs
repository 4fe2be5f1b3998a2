//! `plinth rollout watch ENDPOINT`: follows an endpoint's deployment live over the control
//! plane. It prints the endpoint's recent events, then polls `ListEndpointEvents` and
//! `DescribeEndpoint` and prints each new event as a line (`HH:MM:SS.mmm  status  message`,
//! UTC), with a progress bar of the new fleet's traffic share and the deployment's step and
//! phase while the deployment runs (on a terminal only), until the endpoint is no longer
//! `Creating`, `Updating` or `RollingBack`; then a summary line. With `--json` it prints each
//! event as one JSON object per line and nothing else. The module owns the polling loop, the
//! retrying of transient errors and the formatting (pure functions, tested here).

use crate::apply::{CallError, Control};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant, SystemTime};

/// How many past events are shown before following.
pub(crate) const HISTORY: usize = 10;

/// How long transient errors (no connection, throttling, 5xx) are retried before giving up.
pub(crate) const RETRY_FOR: Duration = Duration::from_secs(10);

/// The page size asked of `ListEndpointEvents` (its maximum).
const PAGE: u64 = 1000;

/// The statuses of an endpoint whose deployment is still running.
const IN_PROGRESS: [&str; 3] = ["Creating", "Updating", "RollingBack"];

/// Follow an endpoint's deployment live until it ends. Returns Ok(true) when the endpoint ends
/// InService without a FailureReason, Ok(false) when it rolled back or failed.
pub(crate) fn watch(
    client: &mut impl Control,
    endpoint: &str,
    json: bool,
    poll: Duration,
) -> anyhow::Result<bool> {
    let options = Options {
        json,
        poll,
        retry_for: RETRY_FOR,
        bar: !json && std::io::stdout().is_terminal(),
    };
    follow(client, endpoint, &options, &mut std::io::stdout())
}

/// How [`follow`] runs.
pub(crate) struct Options {
    /// Print events as JSON lines and nothing else.
    pub(crate) json: bool,
    /// The time between two polls.
    pub(crate) poll: Duration,
    /// How long a transient error is retried.
    pub(crate) retry_for: Duration,
    /// Show a progress bar (on standard output) while the deployment runs.
    pub(crate) bar: bool,
}

/// [`watch`], writing its lines to `out` (and the bar, if any, to standard output).
pub(crate) fn follow(
    client: &mut impl Control,
    endpoint: &str,
    options: &Options,
    out: &mut impl Write,
) -> anyhow::Result<bool> {
    let mut description = client
        .call("DescribeEndpoint", json!({ "EndpointName": endpoint }))
        .with_context(|| format!("DescribeEndpoint {endpoint}"))?;
    let mut feed = Feed {
        client,
        endpoint,
        retry_for: options.retry_for,
        pause: options.poll,
        last: None,
        percent: None,
    };
    let mut screen = Screen {
        out,
        json: options.json,
        bar: None,
    };
    let history = feed.drain()?;
    for event in &history[history.len().saturating_sub(HISTORY)..] {
        screen.event(event)?;
    }
    if in_progress(&description) {
        if options.bar {
            screen.bar = Some(new_bar()?);
        }
        loop {
            screen.progress(&description, feed.percent);
            std::thread::sleep(options.poll);
            // Describe first, then read the events: every event up to the state described
            // is then printed before the summary.
            description = match feed.call("DescribeEndpoint", json!({ "EndpointName": endpoint })) {
                Ok(description) => description,
                Err(e) if is_not_found(&e) => {
                    screen.finish(&format!("endpoint {endpoint} was deleted"))?;
                    return Ok(false);
                }
                Err(e) => return Err(e).with_context(|| format!("DescribeEndpoint {endpoint}")),
            };
            for event in feed.drain()? {
                screen.event(&event)?;
            }
            if !in_progress(&description) {
                break;
            }
        }
    }
    let (ok, line) = summary(endpoint, &description);
    screen.finish(&line)?;
    Ok(ok)
}

/// The control-plane calls of one watch: transient errors retried, events read in order.
struct Feed<'a, C> {
    client: &'a mut C,
    endpoint: &'a str,
    retry_for: Duration,
    /// The wait between two tries.
    pause: Duration,
    /// The greatest `Sequence` read so far.
    last: Option<i64>,
    /// The new fleet's traffic share in the latest event that gave one.
    percent: Option<f64>,
}

impl<C: Control> Feed<'_, C> {
    /// `operation`, retried while it fails transiently for up to `retry_for`.
    fn call(&mut self, operation: &str, input: Value) -> Result<Value, CallError> {
        let mut failing_since: Option<Instant> = None;
        loop {
            match self.client.call(operation, input.clone()) {
                Err(e) if is_transient(&e) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.retry_for {
                        return Err(CallError {
                            code: e.code,
                            message: format!(
                                "{} (still failing after {:.1} s of retries)",
                                e.message,
                                since.elapsed().as_secs_f64()
                            ),
                        });
                    }
                    std::thread::sleep(
                        self.pause
                            .clamp(Duration::from_millis(50), Duration::from_secs(1)),
                    );
                }
                answer => return answer,
            }
        }
    }

    /// Every event after the last one read, oldest first.
    fn drain(&mut self) -> anyhow::Result<Vec<Value>> {
        let mut events = Vec::new();
        loop {
            let mut input = json!({ "EndpointName": self.endpoint, "MaxResults": PAGE });
            if let Some(last) = self.last {
                input["AfterSequence"] = json!(last);
            }
            let page = self
                .call("ListEndpointEvents", input)
                .with_context(|| format!("ListEndpointEvents {}", self.endpoint))?;
            let mut advanced = false;
            for event in page["Events"].as_array().into_iter().flatten() {
                let sequence = event["Sequence"].as_i64();
                if let (Some(sequence), Some(last)) = (sequence, self.last) {
                    if sequence <= last {
                        continue;
                    }
                }
                if let Some(sequence) = sequence {
                    self.last = Some(sequence);
                    advanced = true;
                }
                if let Some(percent) = event["NewFleetTrafficPercent"].as_f64() {
                    self.percent = Some(percent);
                }
                events.push(event.clone());
            }
            if !advanced {
                return Ok(events);
            }
        }
    }
}

/// Where the lines go: `out`, or above the bar while there is one.
struct Screen<'a, W> {
    out: &'a mut W,
    json: bool,
    bar: Option<ProgressBar>,
}

impl<W: Write> Screen<'_, W> {
    /// Print one event.
    fn event(&mut self, event: &Value) -> anyhow::Result<()> {
        let line = if self.json {
            serde_json::to_string(event)?
        } else {
            event_line(event)
        };
        self.line(&line)
    }

    fn line(&mut self, line: &str) -> anyhow::Result<()> {
        match &self.bar {
            Some(bar) if !bar.is_hidden() => bar.println(line),
            _ => {
                writeln!(self.out, "{line}")?;
                self.out.flush()?;
            }
        }
        Ok(())
    }

    /// Show the deployment's progress on the bar.
    fn progress(&self, description: &Value, event_percent: Option<f64>) {
        if let Some(bar) = &self.bar {
            let deployment = &description["PendingDeploymentSummary"]["PlinthDeployment"];
            let percent = deployment["NewFleetTrafficPercent"]
                .as_f64()
                .or(event_percent)
                .unwrap_or(0.0);
            bar.set_position(bar_position(percent));
            bar.set_message(progress_message(description, epoch_now()));
        }
    }

    /// Remove the bar and print the last line (not in JSON mode).
    fn finish(&mut self, line: &str) -> anyhow::Result<()> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if !self.json {
            self.line(line)?;
        }
        Ok(())
    }
}

/// A bar of 0 to 100 (percent of traffic on the new fleet) on standard output.
fn new_bar() -> anyhow::Result<ProgressBar> {
    let bar = ProgressBar::with_draw_target(Some(100), ProgressDrawTarget::stdout());
    bar.set_style(
        ProgressStyle::with_template("{bar:40.cyan/blue} {pos:>3}% {msg}")?.progress_chars("#>-"),
    );
    Ok(bar)
}

/// Whether the endpoint's deployment is still running.
pub(crate) fn in_progress(description: &Value) -> bool {
    description["EndpointStatus"]
        .as_str()
        .is_some_and(|s| IN_PROGRESS.contains(&s))
}

/// SageMaker's answer for a missing resource.
fn is_not_found(e: &CallError) -> bool {
    e.code == "ValidationException" && e.message.starts_with("Could not find")
}

/// Whether a failed call is worth trying again: no connection, throttled, or a server error.
pub(crate) fn is_transient(e: &CallError) -> bool {
    matches!(
        e.code.as_str(),
        "ConnectionError" | "ThrottlingException" | "ServiceUnavailable" | "InternalFailure"
    ) || e.code.parse::<u16>().is_ok_and(|status| status >= 500)
}

/// Seconds since the Unix epoch, now.
fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The UTC time of day of `epoch_seconds`, as `HH:MM:SS.mmm` (rounded to the millisecond).
pub(crate) fn clock(epoch_seconds: f64) -> String {
    if !epoch_seconds.is_finite() {
        return "--:--:--.---".into();
    }
    const DAY_MS: i64 = 86_400_000;
    let ms = ((epoch_seconds * 1000.0).round() as i64).rem_euclid(DAY_MS);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// One event as a line: `HH:MM:SS.mmm  <EndpointStatus padded>  <Message>`.
pub(crate) fn event_line(event: &Value) -> String {
    let time = event["EventTime"]
        .as_f64()
        .map_or_else(|| clock(f64::NAN), clock);
    let line = format!(
        "{time}  {:<11}  {}",
        event["EndpointStatus"].as_str().unwrap_or("-"),
        event["Message"].as_str().unwrap_or_default()
    );
    line.trim_end().to_string()
}

/// The bar's message for a deployment (`PendingDeploymentSummary.PlinthDeployment`), at
/// `now` (epoch seconds): `CANARY step 2/5 Baking 3.2 s left`.
pub(crate) fn deployment_message(deployment: &Value, now: f64) -> String {
    let mut parts = Vec::new();
    if let Some(strategy) = deployment["Strategy"].as_str() {
        parts.push(strategy.to_string());
    }
    if let (Some(step), Some(steps)) = (deployment["Step"].as_u64(), deployment["Steps"].as_u64()) {
        parts.push(format!("step {step}/{steps}"));
    }
    if let Some(phase) = deployment["Phase"].as_str() {
        parts.push(phase.to_string());
    }
    if let Some(end) = deployment["PhaseEndTime"].as_f64() {
        parts.push(format!("{:.1} s left", (end - now).max(0.0)));
    }
    parts.join(" ")
}

/// The bar's message for a DescribeEndpoint answer: the deployment's, or the endpoint's status
/// while there is no deployment detail (e.g. `Creating`).
pub(crate) fn progress_message(description: &Value, now: f64) -> String {
    let deployment = &description["PendingDeploymentSummary"]["PlinthDeployment"];
    if deployment.is_object() {
        deployment_message(deployment, now)
    } else {
        description["EndpointStatus"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// A traffic percentage as a bar position in 0..=100.
pub(crate) fn bar_position(percent: f64) -> u64 {
    if percent.is_nan() {
        0
    } else {
        percent.clamp(0.0, 100.0).round() as u64
    }
}

/// Whether the endpoint ended well, and the last line: InService without a FailureReason is
/// success; InService with one means the deployment rolled back.
pub(crate) fn summary(endpoint: &str, description: &Value) -> (bool, String) {
    let status = description["EndpointStatus"].as_str().unwrap_or("unknown");
    let config = description["EndpointConfigName"]
        .as_str()
        .unwrap_or_default();
    let reason = description["FailureReason"]
        .as_str()
        .filter(|r| !r.is_empty());
    match (status, reason) {
        ("InService", None) => (
            true,
            format!("endpoint {endpoint} is InService with config {config}"),
        ),
        ("InService", Some(reason)) => (
            false,
            format!("endpoint {endpoint} rolled back: InService with config {config}; {reason}"),
        ),
        (status, reason) => (
            false,
            format!(
                "endpoint {endpoint} is {status} (config {config}): {}",
                reason.unwrap_or("no FailureReason given")
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_utc_time_of_day() {
        assert_eq!(clock(0.0), "00:00:00.000");
        // 2024-05-01T13:45:07.250Z
        assert_eq!(clock(1_714_571_107.25), "13:45:07.250");
        assert_eq!(clock(1_714_571_107.249_6), "13:45:07.250");
        assert_eq!(clock(86_399.999_4), "23:59:59.999");
        assert_eq!(clock(86_399.999_6), "00:00:00.000");
        assert_eq!(clock(-0.5), "23:59:59.500");
        assert_eq!(clock(f64::NAN), "--:--:--.---");
    }

    #[test]
    fn event_lines() {
        let event = json!({
            "Sequence": 7,
            "EventTime": 1_714_571_107.25,
            "EndpointName": "e",
            "EndpointStatus": "Updating",
            "EndpointConfigName": "old",
            "PendingEndpointConfigName": "new",
            "NewFleetTrafficPercent": 10.0,
            "Message": "canary: 10% of traffic on the new fleet"
        });
        assert_eq!(
            event_line(&event),
            "13:45:07.250  Updating     canary: 10% of traffic on the new fleet"
        );
        let event = json!({"EventTime": 0.0, "EndpointStatus": "RollingBack", "Message": "x"});
        assert_eq!(event_line(&event), "00:00:00.000  RollingBack  x");
        assert_eq!(
            event_line(&json!({"EventTime": 0.0, "EndpointStatus": "InService", "Message": ""})),
            "00:00:00.000  InService"
        );
        assert_eq!(event_line(&json!({})), "--:--:--.---  -");
    }

    #[test]
    fn progress_messages() {
        let deployment = json!({
            "Strategy": "CANARY",
            "Step": 2,
            "Steps": 5,
            "NewFleetTrafficPercent": 10.0,
            "Phase": "Baking",
            "PhaseEndTime": 1003.25
        });
        assert_eq!(
            deployment_message(&deployment, 1000.0),
            "CANARY step 2/5 Baking 3.2 s left"
        );
        assert_eq!(
            deployment_message(&deployment, 1010.0),
            "CANARY step 2/5 Baking 0.0 s left"
        );
        let deployment =
            json!({"Strategy": "LINEAR", "Step": 1, "Steps": 4, "Phase": "ActivatingTraffic"});
        assert_eq!(
            deployment_message(&deployment, 0.0),
            "LINEAR step 1/4 ActivatingTraffic"
        );
        let description = json!({
            "EndpointStatus": "Updating",
            "PendingDeploymentSummary": {"PlinthDeployment": deployment}
        });
        assert_eq!(
            progress_message(&description, 0.0),
            "LINEAR step 1/4 ActivatingTraffic"
        );
        assert_eq!(
            progress_message(&json!({"EndpointStatus": "Creating"}), 0.0),
            "Creating"
        );
        assert_eq!(bar_position(33.4), 33);
        assert_eq!(bar_position(150.0), 100);
        assert_eq!(bar_position(-1.0), 0);
        assert_eq!(bar_position(f64::NAN), 0);
    }

    #[test]
    fn summaries() {
        let ok = json!({"EndpointStatus": "InService", "EndpointConfigName": "v2"});
        assert_eq!(
            summary("e", &ok),
            (true, "endpoint e is InService with config v2".into())
        );
        let rolled_back = json!({
            "EndpointStatus": "InService",
            "EndpointConfigName": "v1",
            "FailureReason": "alarm fired"
        });
        assert_eq!(
            summary("e", &rolled_back),
            (
                false,
                "endpoint e rolled back: InService with config v1; alarm fired".into()
            )
        );
        let failed =
            json!({"EndpointStatus": "Failed", "EndpointConfigName": "v1", "FailureReason": "no"});
        assert_eq!(
            summary("e", &failed),
            (false, "endpoint e is Failed (config v1): no".into())
        );
        assert!(in_progress(&json!({"EndpointStatus": "RollingBack"})));
        assert!(!in_progress(&json!({"EndpointStatus": "InService"})));
        assert!(!in_progress(&json!({})));
    }

    #[test]
    fn transient_errors() {
        let e = |code: &str| CallError {
            code: code.into(),
            message: String::new(),
        };
        assert!(is_transient(&e("ConnectionError")));
        assert!(is_transient(&e("503")));
        assert!(is_transient(&e("ThrottlingException")));
        assert!(!is_transient(&e("ValidationException")));
        assert!(!is_transient(&e("404")));
    }

    /// A server that plays a deployment: each DescribeEndpoint moves to the next state and
    /// records that state's events; ListEndpointEvents pages through the events recorded.
    struct Script {
        /// (the DescribeEndpoint answer, the (status, message) events that come with it)
        states: Vec<(Value, Vec<(&'static str, &'static str)>)>,
        next: usize,
        events: Vec<Value>,
        /// The calls (counted from 0) that fail with `ConnectionError`.
        outage: std::ops::Range<usize>,
        /// The server's page size limit.
        page: usize,
        calls: Vec<String>,
    }

    impl Script {
        fn new(history: usize, states: Vec<(Value, Vec<(&'static str, &'static str)>)>) -> Self {
            let mut script = Script {
                states,
                next: 0,
                events: Vec::new(),
                outage: 0..0,
                page: 4,
                calls: Vec::new(),
            };
            for i in 0..history {
                script.record("InService", if i % 2 == 0 { "even" } else { "odd" });
            }
            script
        }

        fn record(&mut self, status: &str, message: &str) {
            let sequence = self.events.len() as i64 + 1;
            self.events.push(json!({
                "Sequence": sequence,
                "EventTime": sequence as f64,
                "EndpointName": "e",
                "EndpointStatus": status,
                "EndpointConfigName": "v1",
                "Message": message,
            }));
        }
    }

    impl Control for Script {
        fn call(&mut self, operation: &str, input: Value) -> Result<Value, CallError> {
            self.calls.push(operation.to_string());
            assert_eq!(input["EndpointName"], "e");
            if self.outage.contains(&(self.calls.len() - 1)) {
                return Err(CallError {
                    code: "ConnectionError".into(),
                    message: "connection refused".into(),
                });
            }
            match operation {
                "DescribeEndpoint" => {
                    let i = self.next.min(self.states.len() - 1);
                    if i == self.next {
                        for (status, message) in self.states[i].1.clone() {
                            self.record(status, message);
                        }
                        self.next += 1;
                    }
                    Ok(self.states[i].0.clone())
                }
                "ListEndpointEvents" => {
                    let after = input["AfterSequence"].as_i64().unwrap_or(0);
                    let max = input["MaxResults"].as_u64().unwrap() as usize;
                    let events: Vec<Value> = self
                        .events
                        .iter()
                        .filter(|e| e["Sequence"].as_i64().unwrap() > after)
                        .take(max.min(self.page))
                        .cloned()
                        .collect();
                    Ok(json!({ "Events": events }))
                }
                other => panic!("unexpected {other}"),
            }
        }
    }

    fn updating(step: u64, percent: f64) -> Value {
        json!({
            "EndpointStatus": "Updating",
            "EndpointConfigName": "v1",
            "PendingDeploymentSummary": {
                "EndpointConfigName": "v2",
                "PlinthDeployment": {
                    "Strategy": "CANARY", "Step": step, "Steps": 2,
                    "NewFleetTrafficPercent": percent, "Phase": "Baking", "PhaseEndTime": 5.0
                }
            }
        })
    }

    fn options(json: bool) -> Options {
        Options {
            json,
            poll: Duration::from_millis(1),
            retry_for: Duration::from_secs(5),
            bar: false,
        }
    }

    fn run(script: &mut Script, options: &Options) -> (anyhow::Result<bool>, String) {
        let mut out = Vec::new();
        let result = follow(script, "e", options, &mut out);
        (result, String::from_utf8(out).unwrap())
    }

    fn messages(out: &str) -> Vec<String> {
        out.lines()
            .map(|l| match l.as_bytes().get(2) {
                Some(b':') => l[14..].to_string(),
                _ => l.to_string(),
            })
            .collect()
    }

    #[test]
    fn follows_a_deployment_to_the_end() {
        let mut script = Script::new(
            13,
            vec![
                (updating(1, 10.0), vec![("Updating", "started")]),
                (updating(1, 10.0), vec![]),
                (
                    updating(2, 100.0),
                    vec![("Updating", "step 2"), ("Updating", "bake")],
                ),
                (
                    json!({"EndpointStatus": "InService", "EndpointConfigName": "v2"}),
                    vec![("InService", "done")],
                ),
            ],
        );
        // The second describe fails twice (retried), then succeeds.
        script.outage = 6..8;
        let (result, out) = run(&mut script, &options(false));
        assert!(result.unwrap());
        let lines = messages(&out);
        // The last 10 of the 13 past events plus the one recorded by the first describe.
        assert_eq!(lines.len(), 10 + 3 + 1, "{out}");
        assert_eq!(lines[0], "InService    even");
        assert_eq!(lines[9], "Updating     started");
        assert_eq!(lines[10], "Updating     step 2");
        assert_eq!(lines[11], "Updating     bake");
        assert_eq!(lines[12], "InService    done");
        assert_eq!(lines[13], "endpoint e is InService with config v2");
        assert!(
            out.starts_with("00:00:05.000  InService    even\n"),
            "{out}"
        );
        assert_eq!(
            script
                .calls
                .iter()
                .filter(|c| *c == "DescribeEndpoint")
                .count(),
            4 + 2
        );
    }

    #[test]
    fn a_rollback_is_a_failure() {
        let mut script = Script::new(
            0,
            vec![
                (updating(1, 10.0), vec![("Updating", "started")]),
                (
                    json!({"EndpointStatus": "RollingBack", "EndpointConfigName": "v1"}),
                    vec![("RollingBack", "alarm")],
                ),
                (
                    json!({
                        "EndpointStatus": "InService",
                        "EndpointConfigName": "v1",
                        "FailureReason": "rolled back: alarm"
                    }),
                    vec![("InService", "rolled back")],
                ),
            ],
        );
        let (result, out) = run(&mut script, &options(false));
        assert!(!result.unwrap());
        assert_eq!(
            messages(&out),
            [
                "Updating     started",
                "RollingBack  alarm",
                "InService    rolled back",
                "endpoint e rolled back: InService with config v1; rolled back: alarm"
            ]
        );
    }

    #[test]
    fn json_prints_events_only() {
        let mut script = Script::new(
            2,
            vec![
                (updating(1, 10.0), vec![]),
                (
                    json!({"EndpointStatus": "Failed", "EndpointConfigName": "v1", "FailureReason": "x"}),
                    vec![("Failed", "broke")],
                ),
            ],
        );
        let (result, out) = run(&mut script, &options(true));
        assert!(!result.unwrap());
        let events: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events, script.events);
    }

    #[test]
    fn no_deployment_returns_at_once() {
        let mut script = Script::new(
            3,
            vec![(
                json!({"EndpointStatus": "InService", "EndpointConfigName": "v1"}),
                vec![],
            )],
        );
        let (result, out) = run(&mut script, &options(false));
        assert!(result.unwrap());
        assert_eq!(
            messages(&out),
            [
                "InService    even",
                "InService    odd",
                "InService    even",
                "endpoint e is InService with config v1"
            ]
        );
        assert_eq!(
            script
                .calls
                .iter()
                .filter(|c| *c == "DescribeEndpoint")
                .count(),
            1
        );
    }

    #[test]
    fn gives_up_after_a_long_outage() {
        let mut script = Script::new(0, vec![(updating(1, 10.0), vec![])]);
        script.outage = 0..1; // the first DescribeEndpoint is not retried
        let (result, _) = run(&mut script, &options(false));
        assert!(format!("{:#}", result.unwrap_err()).contains("connection refused"));

        let script = Script::new(0, vec![(updating(1, 10.0), vec![])]);
        let mut options = options(false);
        options.retry_for = Duration::from_millis(30);
        // Answer the first describe and the history, then fail for good.
        let mut out = Vec::new();
        let mut flaky = Flaky {
            inner: script,
            answered: 0,
            answer: 2,
        };
        let error = follow(&mut flaky, "e", &options, &mut out).unwrap_err();
        assert!(
            format!("{error:#}").contains("still failing after"),
            "{error:#}"
        );
    }

    /// Answers `answer` calls, then fails every one with a connection error.
    struct Flaky {
        inner: Script,
        answered: usize,
        answer: usize,
    }

    impl Control for Flaky {
        fn call(&mut self, operation: &str, input: Value) -> Result<Value, CallError> {
            if self.answered < self.answer {
                self.answered += 1;
                return self.inner.call(operation, input);
            }
            Err(CallError {
                code: "ConnectionError".into(),
                message: "connection refused".into(),
            })
        }
    }
}
