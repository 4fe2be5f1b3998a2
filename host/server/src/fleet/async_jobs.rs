//! Asynchronous inference's queue runner: jobs accepted by InvokeEndpointAsync (committed
//! to the store's `async_jobs` before the 202) are claimed per endpoint, up to
//! `MaxConcurrentInvocationsPerInstance` per instance of the variants serving it, and run:
//! the input read through the storage layer (a local path or `s3://`), the variant invoked
//! as a synchronous request would be (routing, the invocation timeout, metrics), and the
//! result written to the output location, or the failure to the failure location, each
//! whole (a temporary file renamed, or one upload), before the job is marked done. Jobs a
//! stop interrupted go back to the queue at start and run again (at most
//! `plinth_policy::async_inference::MAX_ATTEMPTS` starts); a job whose time to live passed in
//! the queue fails without running.

use super::deployer::Fleet;
use super::variant::record_invocation;
use crate::state::store::AsyncJob;
use plinth_policy::async_inference::{fate, Fate, Queued};
use plinth_runtime::{Invocation, InvokeError};
use plinth_storage::Location;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the queue keeps a done job (it refuses its inference id again meanwhile): a day.
const KEEP_DONE_SECONDS: f64 = 86_400.0;

/// The queue runner's state: what wakes it, and the jobs running per endpoint.
#[derive(Default)]
pub(crate) struct AsyncJobs {
    wake: tokio::sync::Notify,
    running: Mutex<HashMap<String, usize>>,
}

impl AsyncJobs {
    /// A job was queued (or finished): look at the queue now.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Run the queue until the process ends.
pub(crate) async fn run(state: Arc<Fleet>) {
    // What a stop left staged is not needed: every job it was for runs again.
    if let Ok(dir) = scratch(&state) {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match state.stored.store.requeue_running_jobs() {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            jobs = n,
            "asynchronous jobs a stop interrupted are queued again"
        ),
        Err(e) => tracing::error!(error = %e, "the asynchronous jobs could not be requeued"),
    }
    let mut forgotten_at = std::time::Instant::now();
    loop {
        if let Err(e) = start_ready(&state) {
            tracing::error!(error = %e, "the asynchronous queue could not be read");
        }
        if forgotten_at.elapsed() > Duration::from_secs(60) {
            forgotten_at = std::time::Instant::now();
            let before = crate::state::now() - KEEP_DONE_SECONDS;
            if let Err(e) = state.stored.store.forget_done_jobs(before) {
                tracing::warn!(error = %e, "done asynchronous jobs could not be forgotten");
            }
        }
        // A job queued or finished wakes the runner; an endpoint that comes into service is
        // found within a second.
        let _ =
            tokio::time::timeout(Duration::from_secs(1), state.async_jobs.wake.notified()).await;
    }
}

/// Claim and start what each endpoint with queued jobs has room for.
fn start_ready(state: &Arc<Fleet>) -> Result<(), crate::state::store::StoreError> {
    for endpoint in state.stored.store.endpoints_with_jobs()? {
        let Some(room) = room(state, &endpoint) else {
            continue;
        };
        let free = room.saturating_sub(
            state
                .async_jobs
                .running()
                .get(&endpoint)
                .copied()
                .unwrap_or(0),
        );
        if free == 0 {
            continue;
        }
        for job in state.stored.store.claim_jobs(&endpoint, free)? {
            *state
                .async_jobs
                .running()
                .entry(endpoint.clone())
                .or_default() += 1;
            let state = state.clone();
            // The running count goes down under the key it went up under.
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
                let seq = job.seq;
                let outcome = std::panic::AssertUnwindSafe(run_job(&state, &job));
                let outcome = futures::FutureExt::catch_unwind(outcome).await;
                if outcome.is_err() {
                    tracing::error!(endpoint = %endpoint, seq, "an asynchronous job's task panicked; it runs again after a restart");
                }
                if let Some(n) = state.async_jobs.running().get_mut(&endpoint) {
                    *n = n.saturating_sub(1);
                }
                state.async_jobs.wake();
            });
        }
    }
    Ok(())
}

/// How many jobs `endpoint` may run at once: `MaxConcurrentInvocationsPerInstance` for each
/// instance of the variants serving it (at least one, so that a variant scaled to zero is
/// started by its first job); `None` while it does not serve, or has no
/// `AsyncInferenceConfig` (a job of a deleted or reconfigured endpoint is failed when run).
fn room(state: &Fleet, endpoint: &str) -> Option<usize> {
    let Some(snapshot) = state.endpoints.get(endpoint) else {
        // Deleted: its jobs are claimed and failed.
        return Some(16);
    };
    if snapshot.variants.is_empty() {
        return None;
    }
    let per_instance = state
        .catalog()
        .configs
        .get(&snapshot.config_name)
        .and_then(|c| {
            c.definition
                .async_inference_config
                .as_ref()
                .map(|a| a.per_instance())
        })
        .unwrap_or(1);
    let instances: usize = snapshot
        .serving()
        .map(|v| v.live.serving.stats().instances)
        .sum();
    Some(per_instance * instances.max(1))
}

/// Why a job did not produce its output.
enum Unfinished {
    /// It failed: this message goes to the failure object.
    Failed(String),
    /// The variant had no room (throttled, no instance yet): the job waits in the queue
    /// again, its start not counted.
    Busy(String),
}

impl From<String> for Unfinished {
    fn from(message: String) -> Self {
        Unfinished::Failed(message)
    }
}

/// How long reading an input or writing a result may take.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Run one job to its end: the output or the failure object written, then the job done (or,
/// when the variant had no room, back in the queue).
async fn run_job(state: &Arc<Fleet>, job: &AsyncJob) {
    let j = &job.job;
    let text = |key: &str| j[key].as_str().unwrap_or_default().to_string();
    let (output, failure) = (text("OutputLocation"), text("FailureLocation"));
    // A job that a stop interrupted after its output was written is complete.
    if job.attempts > 0 && exists(state, &output).await {
        finish(
            state,
            job,
            json!({ "Status": "Completed", "OutputLocation": output }),
        );
        return;
    }
    let queued = Queued {
        accepted: job.accepted,
        ttl_seconds: j["RequestTTLSeconds"].as_u64().unwrap_or(21_600),
        attempts: job.attempts,
    };
    let result = match fate(&queued, crate::state::now()) {
        Fate::Fail(message) => Err(Unfinished::Failed(message)),
        Fate::Run => invoke(state, job).await,
    };
    let outcome = match result {
        Ok(body) => {
            match tokio::time::timeout(TRANSFER_TIMEOUT, write(state, &body, &output)).await {
                Ok(Ok(())) => json!({ "Status": "Completed", "OutputLocation": output }),
                Ok(Err(e)) => {
                    let message = format!("The result could not be written to {output}: {e}");
                    fail(state, &message, &failure).await
                }
                Err(_) => {
                    let message =
                        format!("The result could not be written to {output} within 15 minutes");
                    fail(state, &message, &failure).await
                }
            }
        }
        Err(Unfinished::Failed(message)) => fail(state, &message, &failure).await,
        Err(Unfinished::Busy(why)) => {
            tracing::debug!(endpoint = %job.endpoint, why = %why, "an asynchronous job waits for room");
            if let Err(e) = state.stored.store.release_job(job.seq) {
                tracing::error!(endpoint = %job.endpoint, error = %e, "an asynchronous job could not go back to the queue; it runs again after a restart");
            }
            // Some room first: a throttled variant is not tried again at once.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return;
        }
    };
    finish(state, job, outcome);
}

/// Record a job's end.
fn finish(state: &Fleet, job: &AsyncJob, outcome: Value) {
    tracing::info!(endpoint = %job.endpoint, inference_id = %job.job["InferenceId"], status = %outcome["Status"], "asynchronous job done");
    if let Err(e) = state.stored.store.finish_job(job.seq, &outcome) {
        tracing::error!(endpoint = %job.endpoint, error = %e, "an asynchronous job's end could not be recorded; it runs again after a restart");
    }
}

/// Whether there is an object at `location`.
async fn exists(state: &Fleet, location: &str) -> bool {
    let Ok(parsed) = Location::parse(location) else {
        return false;
    };
    state.stored.remote.storage().head(&parsed).await.is_ok()
}

/// Write the failure object (the message); the outcome to record.
async fn fail(state: &Fleet, message: &str, failure: &str) -> Value {
    let written = tokio::time::timeout(TRANSFER_TIMEOUT, write(state, message.as_bytes(), failure))
        .await
        .unwrap_or_else(|_| Err("not written within 15 minutes".to_string()));
    match written {
        Ok(()) => json!({ "Status": "Failed", "FailureLocation": failure, "Message": message }),
        Err(e) => {
            tracing::error!(failure_location = %failure, error = %e, "an asynchronous job's failure object could not be written");
            json!({ "Status": "Failed", "Message": message, "WriteError": e })
        }
    }
}

/// The job's input, its variant invoked on it: the response body, or why not.
async fn invoke(state: &Fleet, job: &AsyncJob) -> Result<Vec<u8>, Unfinished> {
    let j = &job.job;
    let gone = || {
        format!(
            "Endpoint {} was deleted after the request was queued",
            job.endpoint
        )
    };
    let snapshot = state.endpoints.get(&job.endpoint).ok_or_else(gone)?;
    if snapshot.created > job.accepted {
        // Deleted and created again: not the endpoint the request was sent to.
        return Err(gone().into());
    }
    let input = j["InputLocation"].as_str().unwrap_or_default();
    let body = tokio::time::timeout(TRANSFER_TIMEOUT, read(state, input))
        .await
        .map_err(|_| format!("The input could not be read from {input} within 15 minutes"))??;
    let routed = snapshot
        .route(None, None)
        .map_err(|e| Unfinished::Busy(e.to_string()))?;
    let variant = routed.variant.clone();
    let request = Arc::new(Invocation {
        body: body.into(),
        content_type: j["ContentType"].as_str().unwrap_or_default().to_string(),
        accept: j["Accept"].as_str().unwrap_or_default().to_string(),
        inference_id: j["InferenceId"].as_str().unwrap_or(&job.id).to_string(),
        custom_attributes: j["CustomAttributes"].as_str().map(str::to_string),
    });
    let timeout = Duration::from_secs(j["InvocationTimeoutSeconds"].as_u64().unwrap_or(900));
    let started = std::time::Instant::now();
    let held = variant
        .serving
        .hold(None, &variant.name)
        .await
        .map_err(|e| e.message().to_string())?;
    let result = tokio::time::timeout(timeout, held.invoke(request))
        .await
        .map_err(|_| {
            format!(
                "The invocation timed out after its InvocationTimeoutSeconds ({} s)",
                timeout.as_secs()
            )
        })?;
    if let Err(
        e @ (InvokeError::Throttled { .. }
        | InvokeError::NoInstances(_)
        | InvokeError::Unavailable(_)),
    ) = &result
    {
        return Err(Unfinished::Busy(e.to_string()));
    }
    let error = record_invocation(&variant, &result, started);
    match result {
        Ok(output) => Ok(output.body),
        Err(_) => Err(Unfinished::Failed(error.map_or_else(
            || "the invocation failed".to_string(),
            |e| e.message().to_string(),
        ))),
    }
}

/// The most an asynchronous input may be (SageMaker's 1 GB).
const MAX_INPUT_BYTES: u64 = 1 << 30;

/// The bytes at `location`, through the storage layer (staged in a file under the artifacts
/// directory).
async fn read(state: &Fleet, location: &str) -> Result<Vec<u8>, String> {
    let parsed =
        Location::parse(location).map_err(|e| format!("InputLocation {location:?}: {e}"))?;
    if let Location::Local(path) = &parsed {
        // Checked when the request came; checked again now, in case the path has become a
        // link leading elsewhere since.
        let real = state
            .stored
            .roots
            .check("InputLocation", &path.display().to_string())?;
        if !Path::new(&real).is_file() {
            return Err(format!("InputLocation {location:?} is not a file"));
        }
    }
    let dir = scratch(state).map_err(|e| format!("InputLocation {location}: {e}"))?;
    let downloaded = state
        .stored
        .remote
        .storage()
        .download(&parsed, &dir, MAX_INPUT_BYTES)
        .await
        .map_err(|e| format!("The input could not be read from {location}: {e}"))?;
    let bytes = tokio::fs::read(downloaded.file.path())
        .await
        .map_err(|e| format!("The input could not be read from {location}: {e}"))?;
    Ok(bytes)
}

/// Write `bytes` to `location` whole: staged in a file, then uploaded (one object) or, for a
/// local path, renamed into place, so that a reader never sees part of it.
async fn write(state: &Fleet, bytes: &[u8], location: &str) -> Result<(), String> {
    let parsed = Location::parse(location).map_err(|e| format!("{location:?}: {e}"))?;
    let dir = match &parsed {
        Location::Local(path) => path.parent().map(Path::to_path_buf).unwrap_or_default(),
        _ => scratch(state)?,
    };
    let staged = tempfile::Builder::new()
        .prefix(".partial-")
        .tempfile_in(&dir)
        .map_err(|e| format!("cannot stage the object in {}: {e}", dir.display()))?;
    tokio::fs::write(staged.path(), bytes)
        .await
        .map_err(|e| format!("cannot stage the object: {e}"))?;
    match &parsed {
        Location::Local(path) => {
            let file = staged.as_file().try_clone().map_err(|e| e.to_string())?;
            file.sync_all().map_err(|e| e.to_string())?;
            staged
                .persist(path)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        _ => {
            state
                .stored
                .remote
                .storage()
                .upload(staged.path(), &parsed)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Where inputs and results are staged: `artifacts/async`.
fn scratch(state: &Fleet) -> Result<std::path::PathBuf, String> {
    let dir = state.stored.artifacts.join("async");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}
