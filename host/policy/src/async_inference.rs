//! Asynchronous inference, its decisions: what InvokeEndpointAsync's headers may say (the
//! request's time to live and invocation timeout, in SageMaker's ranges), where a job's
//! output and failure objects go (SageMaker's names under `AsyncInferenceConfig`'s paths),
//! a queued job's fate at a given moment (run, or expired), the notifications a finished job
//! sends (webhooks in place of SNS topics: which URLs, what message, when a failed delivery
//! is tried again), and the queue's backlog as SageMaker's metrics measure it.

use serde_json::{json, Value};
use std::fmt;

/// `X-Amzn-SageMaker-RequestTTLSeconds`: the least, the most, and when none is given.
pub const TTL_SECONDS: (u64, u64, u64) = (60, 21_600, 21_600);
/// `X-Amzn-SageMaker-InvocationTimeoutSeconds`: the least, the most, and when none is given.
pub const INVOCATION_TIMEOUT_SECONDS: (u64, u64, u64) = (1, 3_600, 900);
/// `ClientConfig.MaxConcurrentInvocationsPerInstance`: the least, the most, and when none is
/// given (a Wasm instance serves one request at a time).
pub const CONCURRENT_INVOCATIONS_PER_INSTANCE: (u64, u64, u64) = (1, 1_000, 1);
/// The longest `X-Amzn-SageMaker-InferenceId`.
pub const MAX_INFERENCE_ID_LEN: usize = 64;

/// Why a header is refused (the message names it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A whole number of seconds in `range` (least, most, default) from header `name`'s value,
/// or the default when the header is absent.
pub fn seconds(name: &str, value: Option<&str>, range: (u64, u64, u64)) -> Result<u64, Invalid> {
    let (least, most, default) = range;
    let Some(value) = value else {
        return Ok(default);
    };
    match value.trim().parse::<u64>() {
        Ok(n) if (least..=most).contains(&n) => Ok(n),
        _ => Err(Invalid(format!(
            "{name} {value:?} must be a whole number of seconds between {least} and {most}"
        ))),
    }
}

/// Where a job's result goes: `<S3OutputPath>/<id>.out`, `id` the job's own.
pub fn output_location(output_path: &str, inference_id: &str) -> String {
    format!("{}/{inference_id}.out", output_path.trim_end_matches('/'))
}

/// Where a job's failure goes: `<S3FailurePath>/<id>-error.out`, or under
/// `S3OutputPath` when the config gives no failure path.
pub fn failure_location(
    output_path: &str,
    failure_path: Option<&str>,
    inference_id: &str,
) -> String {
    format!(
        "{}/{inference_id}-error.out",
        failure_path.unwrap_or(output_path).trim_end_matches('/')
    )
}

/// A job as the queue keeps it, for the decision of what to do with it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Queued {
    /// When it was accepted (epoch seconds).
    pub accepted: f64,
    /// `RequestTTLSeconds`.
    pub ttl_seconds: u64,
    /// `InvocationTimeoutSeconds`.
    pub timeout_seconds: u64,
    /// Times it started running before (a restart interrupted it).
    pub attempts: u32,
}

/// The most times a job is started: one run, and reruns after restarts that interrupted
/// it. A job that brings the server down each time it runs fails rather than looping.
pub const MAX_ATTEMPTS: u32 = 3;

/// What to do with a queued job now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Run it.
    Run,
    /// Fail it with this message, without running it.
    Fail(String),
}

/// A queued job's fate at `now`: expired once its time to live has passed since it was
/// accepted while it never started (SageMaker's `ExpiredRequests`: the TTL is the time a
/// request may wait). One a stop interrupted runs again, unless its time to live and its
/// invocation timeout have both passed since it was accepted (the time it had to start and
/// to run): it would be late twice over. Failed after [`MAX_ATTEMPTS`] starts.
pub fn fate(job: &Queued, now: f64) -> Fate {
    let waited = now - job.accepted;
    if job.attempts == 0 && waited > job.ttl_seconds as f64 {
        return Fate::Fail(format!(
            "The request expired: it waited more than its RequestTTLSeconds ({} s) in the \
             queue",
            job.ttl_seconds
        ));
    }
    if job.attempts > 0 && waited > (job.ttl_seconds + job.timeout_seconds) as f64 {
        return Fate::Fail(format!(
            "The request expired: a stop interrupted it, and its RequestTTLSeconds ({} s) and \
             InvocationTimeoutSeconds ({} s) had both passed before it could run again",
            job.ttl_seconds, job.timeout_seconds
        ));
    }
    if job.attempts >= MAX_ATTEMPTS {
        return Fate::Fail(format!(
            "The request was started {} times and never finished (the server stopped while \
             it ran each time); it is not tried again",
            job.attempts
        ));
    }
    Fate::Run
}

/// `NotificationConfig.SuccessTopic` / `ErrorTopic`: Plinth delivers notifications as
/// webhooks, so a topic is an `http://` or `https://` URL, POSTed one JSON message per job.
/// An SNS topic ARN is refused by name: Plinth has no SNS.
pub fn webhook(member: &str, value: &str) -> Result<String, Invalid> {
    if value.starts_with("arn:") {
        return Err(Invalid(format!(
            "{member} {value:?} is an SNS topic; Plinth has no SNS and delivers notifications \
             as webhooks: give an http:// or https:// URL"
        )));
    }
    let not_a_webhook = || {
        Invalid(format!(
            "{member} {value:?} is not a webhook: give an http:// or https:// URL with a host, \
             at most {MAX_TOPIC_LEN} characters"
        ))
    };
    // An empty authority (`https:///path`) is not a host, however a URL parser mends it.
    let authority_given = value
        .split_once("://")
        .is_some_and(|(_, rest)| !rest.starts_with('/'));
    if value.len() > MAX_TOPIC_LEN || value.chars().any(|c| c.is_whitespace()) || !authority_given {
        return Err(not_a_webhook());
    }
    let url = url::Url::parse(value).map_err(|_| not_a_webhook())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(not_a_webhook());
    }
    let link_local = match url.host() {
        None => return Err(not_a_webhook()),
        Some(url::Host::Domain("")) => return Err(not_a_webhook()),
        Some(url::Host::Ipv4(ip)) => ip.is_link_local(),
        Some(url::Host::Ipv6(ip)) => (ip.segments()[0] & 0xffc0) == 0xfe80,
        Some(url::Host::Domain(_)) => false,
    };
    if link_local {
        return Err(Invalid(format!(
            "{member} {value:?} is a link-local address (a cloud's instance metadata lives \
             there); notifications are not sent to it"
        )));
    }
    Ok(value.to_owned())
}

/// The longest topic (SageMaker's 2048).
pub const MAX_TOPIC_LEN: usize = 2048;

/// `NotificationConfig.IncludeInferenceResponseIn`'s values.
pub const INCLUDE_RESPONSE_IN: [&str; 2] =
    ["SUCCESS_NOTIFICATION_TOPIC", "ERROR_NOTIFICATION_TOPIC"];

/// The largest response a notification includes (SageMaker's 128 KB); a larger one is left
/// out and the message says so.
pub const MAX_INCLUDED_RESPONSE_BYTES: usize = 128 * 1024;

/// Check `IncludeInferenceResponseIn`: each value one of [`INCLUDE_RESPONSE_IN`], once.
pub fn include_response_in(values: &[String]) -> Result<(), Invalid> {
    let at = "AsyncInferenceConfig.OutputConfig.NotificationConfig.IncludeInferenceResponseIn";
    for (i, v) in values.iter().enumerate() {
        if !INCLUDE_RESPONSE_IN.contains(&v.as_str()) {
            return Err(Invalid(format!(
                "{at}[{i}] {v:?} is not one of {}",
                INCLUDE_RESPONSE_IN.join(", ")
            )));
        }
        if values[..i].contains(v) {
            return Err(Invalid(format!("{at}: {v} is given twice")));
        }
    }
    Ok(())
}

/// How a job ended, for its notification.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended<'a> {
    /// Its output was written at `location`; `content_type` is the response's.
    Completed {
        location: &'a str,
        content_type: &'a str,
    },
    /// It failed with `reason`; the failure object is at `location`.
    Failed { location: &'a str, reason: &'a str },
}

/// What a notification says about a job.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished<'a> {
    pub endpoint: &'a str,
    pub inference_id: &'a str,
    pub input_location: &'a str,
    /// The request's `ContentType`.
    pub content_type: &'a str,
    /// When the request was accepted, and when the job ended (epoch seconds).
    pub received: f64,
    pub ended_at: f64,
    pub ended: Ended<'a>,
    /// The response (or the failure message) to include, when the topic asks for it.
    pub response: Option<&'a [u8]>,
}

/// The notification a finished job sends, in SageMaker's message format
/// (`eventName: InferenceResult`), with the response included (base64, up to
/// [`MAX_INCLUDED_RESPONSE_BYTES`]) when asked.
pub fn notification(f: &Finished, region: &str) -> Value {
    let mut message = json!({
        "awsRegion": region,
        "eventTime": iso8601(f.ended_at),
        "receivedTime": iso8601(f.received),
        "requestParameters": {
            "contentType": f.content_type,
            "endpointName": f.endpoint,
            "inputLocation": f.input_location,
        },
        "inferenceId": f.inference_id,
        "eventVersion": "1.0",
        "eventSource": "aws:sagemaker",
        "eventName": "InferenceResult",
    });
    match &f.ended {
        Ended::Completed {
            location,
            content_type,
        } => {
            message["invocationStatus"] = json!("Completed");
            message["responseParameters"] =
                json!({ "contentType": content_type, "outputLocation": location });
        }
        Ended::Failed { location, reason } => {
            message["invocationStatus"] = json!("Failed");
            message["failureReason"] = json!(reason);
            message["responseParameters"] = json!({ "failureLocation": location });
        }
    }
    if let Some(body) = f.response {
        message["responseBody"] = if body.len() <= MAX_INCLUDED_RESPONSE_BYTES {
            json!({
                "content": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, body),
                "encoding": "BASE64",
            })
        } else {
            json!({
                "message": format!(
                    "The response ({} bytes) is larger than {MAX_INCLUDED_RESPONSE_BYTES} bytes \
                     and is not included",
                    body.len()
                ),
            })
        };
    }
    message
}

/// An epoch time as ISO 8601 UTC to the millisecond (`2026-12-07T09:55:21.123Z`).
pub fn iso8601(epoch_seconds: f64) -> String {
    let millis = (epoch_seconds * 1000.0).round().max(0.0) as i64;
    let (days, ms_of_day) = (millis.div_euclid(86_400_000), millis.rem_euclid(86_400_000));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, ms) = (
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z")
}

/// The most times a notification is tried.
pub const MAX_DELIVERY_ATTEMPTS: u32 = 10;

/// The longest wait between two tries of a notification.
pub const MAX_DELIVERY_BACKOFF_SECONDS: u64 = 300;

/// What became of one try to deliver a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tried {
    /// The receiver answered with this status.
    Answered(u16),
    /// No answer: the connection failed or timed out (why).
    NoAnswer(String),
}

/// What to do after a try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Delivered (a 2xx answer).
    Delivered,
    /// Try again after this many seconds.
    RetryIn(u64),
    /// Not delivered, and not tried again: why.
    GaveUp(String),
}

/// After try number `attempts` (1 for the first): a 2xx delivers; no answer, 408, 429 or a
/// 5xx is tried again after 1, 2, 4, ... 256 seconds (never more than
/// [`MAX_DELIVERY_BACKOFF_SECONDS`]), [`MAX_DELIVERY_ATTEMPTS`] tries in all (511 seconds of
/// waits, about 10 minutes with the tries); any other answer is the receiver refusing the
/// message, not tried again.
pub fn after_try(tried: &Tried, attempts: u32) -> Delivery {
    let why = match tried {
        Tried::Answered(status) if (200..300).contains(status) => return Delivery::Delivered,
        Tried::Answered(status @ (408 | 429 | 500..=599)) => {
            format!("the receiver answered {status}")
        }
        Tried::Answered(status) => {
            return Delivery::GaveUp(format!(
                "the receiver refused the notification with {status}; it is not tried again"
            ))
        }
        Tried::NoAnswer(why) => why.clone(),
    };
    if attempts >= MAX_DELIVERY_ATTEMPTS {
        return Delivery::GaveUp(format!(
            "not delivered after {attempts} tries; the last: {why}"
        ));
    }
    let backoff = 1u64
        .checked_shl(attempts.saturating_sub(1))
        .unwrap_or(u64::MAX)
        .min(MAX_DELIVERY_BACKOFF_SECONDS);
    Delivery::RetryIn(backoff)
}

/// An endpoint's queue at one moment, as SageMaker's backlog metrics measure it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Backlog {
    /// Jobs waiting or running.
    pub size: u64,
    /// Instances of the endpoint's variants.
    pub instances: u64,
    /// How long the oldest of them has been in the queue (seconds; 0 with none).
    pub oldest_age_seconds: f64,
}

/// SageMaker's backlog metrics (namespace `AWS/SageMaker`, dimension `EndpointName`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BacklogMetric {
    /// `ApproximateBacklogSize`: jobs waiting or running.
    Size,
    /// `ApproximateBacklogSizePerInstance`: that over the instances (with none, the size
    /// itself, so that any backlog asks for an instance).
    SizePerInstance,
    /// `ApproximateAgeOfOldestRequest`: seconds.
    AgeOfOldestRequest,
    /// `HasBacklogWithoutCapacity`: 1 when there is a backlog and no instance, else 0.
    HasBacklogWithoutCapacity,
}

impl BacklogMetric {
    pub const ALL: [BacklogMetric; 4] = [
        BacklogMetric::Size,
        BacklogMetric::SizePerInstance,
        BacklogMetric::AgeOfOldestRequest,
        BacklogMetric::HasBacklogWithoutCapacity,
    ];

    /// SageMaker's name.
    pub fn as_str(self) -> &'static str {
        match self {
            BacklogMetric::Size => "ApproximateBacklogSize",
            BacklogMetric::SizePerInstance => "ApproximateBacklogSizePerInstance",
            BacklogMetric::AgeOfOldestRequest => "ApproximateAgeOfOldestRequest",
            BacklogMetric::HasBacklogWithoutCapacity => "HasBacklogWithoutCapacity",
        }
    }

    /// The metric of SageMaker name `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// CloudWatch's unit for it.
    pub fn unit(self) -> &'static str {
        match self {
            BacklogMetric::AgeOfOldestRequest => "Seconds",
            _ => "None",
        }
    }

    /// Its value for `backlog`.
    pub fn value(self, backlog: &Backlog) -> f64 {
        match self {
            BacklogMetric::Size => backlog.size as f64,
            BacklogMetric::SizePerInstance => backlog.size as f64 / backlog.instances.max(1) as f64,
            BacklogMetric::AgeOfOldestRequest => backlog.oldest_age_seconds,
            BacklogMetric::HasBacklogWithoutCapacity => {
                f64::from(u8::from(backlog.size > 0 && backlog.instances == 0))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_in_sagemaker_s_ranges_with_its_defaults() {
        let ttl = "X-Amzn-SageMaker-RequestTTLSeconds";
        assert_eq!(seconds(ttl, None, TTL_SECONDS), Ok(21_600));
        assert_eq!(seconds(ttl, Some("60"), TTL_SECONDS), Ok(60));
        assert_eq!(seconds(ttl, Some("21600"), TTL_SECONDS), Ok(21_600));
        for bad in [
            "59",
            "21601",
            "-1",
            "1.5",
            "",
            "soon",
            "99999999999999999999999",
        ] {
            let e = seconds(ttl, Some(bad), TTL_SECONDS).unwrap_err();
            assert!(
                e.0.starts_with(&format!(
                    "{ttl} {bad:?} must be a whole number of seconds between 60 and 21600"
                )),
                "{e}"
            );
        }
        let timeout = "X-Amzn-SageMaker-InvocationTimeoutSeconds";
        assert_eq!(seconds(timeout, None, INVOCATION_TIMEOUT_SECONDS), Ok(900));
        assert!(seconds(timeout, Some("0"), INVOCATION_TIMEOUT_SECONDS).is_err());
        assert!(seconds(timeout, Some("3601"), INVOCATION_TIMEOUT_SECONDS).is_err());
    }

    #[test]
    fn outputs_and_failures_are_named_as_sagemaker_names_them() {
        assert_eq!(
            output_location("s3://b/out/", "id-1"),
            "s3://b/out/id-1.out"
        );
        assert_eq!(output_location("s3://b/out", "id-1"), "s3://b/out/id-1.out");
        assert_eq!(
            failure_location("s3://b/out", Some("s3://b/failed/"), "id-1"),
            "s3://b/failed/id-1-error.out"
        );
        assert_eq!(
            failure_location("s3://b/out", None, "id-1"),
            "s3://b/out/id-1-error.out"
        );
    }

    #[test]
    fn a_job_expires_after_its_ttl_and_fails_after_its_attempts() {
        let job = Queued {
            accepted: 1000.0,
            ttl_seconds: 60,
            timeout_seconds: 900,
            attempts: 0,
        };
        assert_eq!(fate(&job, 1060.0), Fate::Run);
        match fate(&job, 1060.5) {
            Fate::Fail(m) => assert!(m.contains("RequestTTLSeconds (60 s)"), "{m}"),
            other => panic!("{other:?}"),
        }
        let retried = Queued { attempts: 2, ..job };
        assert_eq!(fate(&retried, 1001.0), Fate::Run);
        assert_eq!(
            fate(&retried, 1960.0),
            Fate::Run,
            "it started in time: its TTL and timeout to run again"
        );
        match fate(&retried, 1960.5) {
            Fate::Fail(m) => assert!(m.contains("a stop interrupted it"), "{m}"),
            other => panic!("{other:?}"),
        }
        let exhausted = Queued { attempts: 3, ..job };
        assert!(matches!(fate(&exhausted, 1001.0), Fate::Fail(m) if m.contains("started 3 times")));
    }

    #[test]
    fn webhooks_are_http_urls_and_sns_topics_are_refused_by_name() {
        let m = "SuccessTopic";
        assert_eq!(
            webhook(m, "https://hooks.example/async?x=1"),
            Ok("https://hooks.example/async?x=1".into())
        );
        assert!(webhook(m, "http://127.0.0.1:9000").is_ok());
        let sns = webhook(m, "arn:aws:sns:us-east-1:123456789012:done").unwrap_err();
        assert!(sns.0.contains("SNS topic") && sns.0.contains(m), "{sns}");
        for bad in [
            "ftp://x/y",
            "https://",
            "https:///path",
            "http://a b",
            "hooks.example",
            "http://:80",
            "http://user@/",
        ] {
            let e = webhook(m, bad).unwrap_err();
            assert!(e.0.contains("not a webhook"), "{bad}: {e}");
        }
        assert!(webhook(m, &format!("https://h/{}", "x".repeat(2048))).is_err());
        for metadata in ["http://169.254.169.254/latest", "http://[fe80::1]/x"] {
            let e = webhook(m, metadata).unwrap_err();
            assert!(e.0.contains("link-local"), "{metadata}: {e}");
        }
    }

    #[test]
    fn include_response_in_takes_sagemaker_s_two_values_once_each() {
        let ok =
            |v: &[&str]| include_response_in(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(ok(&[]).is_ok());
        assert!(ok(&["SUCCESS_NOTIFICATION_TOPIC", "ERROR_NOTIFICATION_TOPIC"]).is_ok());
        assert!(ok(&["SUCCESS"])
            .unwrap_err()
            .0
            .contains("IncludeInferenceResponseIn[0]"));
        assert!(
            ok(&["ERROR_NOTIFICATION_TOPIC", "ERROR_NOTIFICATION_TOPIC"])
                .unwrap_err()
                .0
                .contains("given twice")
        );
    }

    #[test]
    fn notifications_are_sagemaker_s_messages() {
        let done = Finished {
            endpoint: "e",
            inference_id: "id-1",
            input_location: "s3://b/in.csv",
            content_type: "text/csv",
            received: 1_765_101_321.5,
            ended_at: 1_765_101_322.25,
            ended: Ended::Completed {
                location: "s3://b/out/x.out",
                content_type: "application/json",
            },
            response: Some(b"[1]"),
        };
        let m = notification(&done, "us-east-1");
        assert_eq!(m["invocationStatus"], "Completed");
        assert_eq!(m["eventName"], "InferenceResult");
        assert_eq!(m["receivedTime"], "2025-12-07T09:55:21.500Z");
        assert_eq!(m["eventTime"], "2025-12-07T09:55:22.250Z");
        assert_eq!(m["requestParameters"]["inputLocation"], "s3://b/in.csv");
        assert_eq!(
            m["responseParameters"]["outputLocation"],
            "s3://b/out/x.out"
        );
        assert_eq!(m["responseBody"]["content"], "WzFd");
        let failed = Finished {
            ended: Ended::Failed {
                location: "s3://b/f/x-error.out",
                reason: "boom",
            },
            response: None,
            ..done.clone()
        };
        let m = notification(&failed, "us-east-1");
        assert_eq!(m["invocationStatus"], "Failed");
        assert_eq!(m["failureReason"], "boom");
        assert_eq!(
            m["responseParameters"]["failureLocation"],
            "s3://b/f/x-error.out"
        );
        assert!(m.get("responseBody").is_none());
        let big = vec![b'x'; MAX_INCLUDED_RESPONSE_BYTES + 1];
        let m = notification(
            &Finished {
                response: Some(&big),
                ..done
            },
            "us-east-1",
        );
        assert!(m["responseBody"].get("content").is_none());
        assert!(m["responseBody"]["message"]
            .as_str()
            .unwrap()
            .contains("131073 bytes"));
    }

    #[test]
    fn iso8601_dates_across_eras_and_leap_days() {
        assert_eq!(iso8601(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400.0), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(4_107_542_399.999), "2100-02-28T23:59:59.999Z");
    }

    #[test]
    fn deliveries_retry_with_backoff_and_give_up() {
        assert_eq!(after_try(&Tried::Answered(204), 1), Delivery::Delivered);
        assert_eq!(after_try(&Tried::Answered(503), 1), Delivery::RetryIn(1));
        assert_eq!(after_try(&Tried::Answered(429), 3), Delivery::RetryIn(4));
        assert_eq!(
            after_try(&Tried::NoAnswer("refused".into()), 9),
            Delivery::RetryIn(256)
        );
        assert_eq!(
            after_try(&Tried::NoAnswer("refused".into()), 50),
            Delivery::GaveUp("not delivered after 50 tries; the last: refused".into())
        );
        assert!(
            matches!(after_try(&Tried::Answered(404), 1), Delivery::GaveUp(m) if m.contains("404"))
        );
        let waits: u64 = (1..MAX_DELIVERY_ATTEMPTS)
            .map(|n| match after_try(&Tried::Answered(500), n) {
                Delivery::RetryIn(s) => s,
                other => panic!("{other:?}"),
            })
            .sum();
        assert_eq!(waits, 1 + 2 + 4 + 8 + 16 + 32 + 64 + 128 + 256);
        assert!(matches!(
            after_try(&Tried::Answered(500), MAX_DELIVERY_ATTEMPTS),
            Delivery::GaveUp(_)
        ));
    }

    #[test]
    fn backlog_metrics_as_sagemaker_defines_them() {
        let b = Backlog {
            size: 10,
            instances: 4,
            oldest_age_seconds: 7.5,
        };
        assert_eq!(BacklogMetric::Size.value(&b), 10.0);
        assert_eq!(BacklogMetric::SizePerInstance.value(&b), 2.5);
        assert_eq!(BacklogMetric::AgeOfOldestRequest.value(&b), 7.5);
        assert_eq!(BacklogMetric::HasBacklogWithoutCapacity.value(&b), 0.0);
        let cold = Backlog { instances: 0, ..b };
        assert_eq!(BacklogMetric::SizePerInstance.value(&cold), 10.0);
        assert_eq!(BacklogMetric::HasBacklogWithoutCapacity.value(&cold), 1.0);
        let empty = Backlog::default();
        assert_eq!(BacklogMetric::HasBacklogWithoutCapacity.value(&empty), 0.0);
        for m in BacklogMetric::ALL {
            assert_eq!(BacklogMetric::from_name(m.as_str()), Some(m));
        }
    }
}
