//! Asynchronous inference, its decisions: what InvokeEndpointAsync's headers may say (the
//! request's time to live and invocation timeout, in SageMaker's ranges), where a job's
//! output and failure objects go (SageMaker's names under `AsyncInferenceConfig`'s paths),
//! and a queued job's fate at a given moment (run, or expired).

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
/// request may wait; one a stop interrupted runs again); failed after [`MAX_ATTEMPTS`]
/// starts.
pub fn fate(job: &Queued, now: f64) -> Fate {
    if job.attempts == 0 && now - job.accepted > job.ttl_seconds as f64 {
        return Fate::Fail(format!(
            "The request expired: it waited more than its RequestTTLSeconds ({} s) in the \
             queue",
            job.ttl_seconds
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
            fate(&retried, 5000.0),
            Fate::Run,
            "it started in time: no TTL"
        );
        let exhausted = Queued { attempts: 3, ..job };
        assert!(matches!(fate(&exhausted, 1001.0), Fate::Fail(m) if m.contains("started 3 times")));
    }
}
