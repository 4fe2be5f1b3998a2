//! Asynchronous inference's queue runner: jobs accepted by InvokeEndpointAsync (written to
//! the queue's log before the 202, `state::queue` through `state::group_commit`) are claimed
//! per endpoint (in memory) and run: the input read through the storage layer (a small local file at once;
//! anything else staged in a file and mapped, never copied whole onto the heap; one larger
//! than the model's memory fails unread), the variant invoked as a synchronous request would
//! be (routing, the invocation timeout, metrics) within the endpoint's invocation slots
//! (`MaxConcurrentInvocationsPerInstance` for each instance of its variants), and the result
//! written to the output location, or the failure to the failure location, each whole (a
//! temporary file renamed, or one upload), before the job is marked done, with its
//! notification queued in the same record. Up to [`PIPELINE_DEPTH`] more jobs than
//! slots are claimed, so that reading, writing and committing overlap the invocations. Jobs
//! a stop interrupted are waiting again when the log is read back at start, and run again (at most
//! `plinth_policy::async_inference::MAX_ATTEMPTS` starts); a job whose time to live passed in
//! the queue fails without running, also on an endpoint that has no instance to run it.
//!
//! Notifications (`NotificationConfig`'s topics, webhook URLs) are delivered by a second
//! loop: each POSTed as SageMaker's JSON message, tried again with backoff on no answer or a
//! 5xx (`plinth_policy::async_inference::after_try`), every try recorded in the queue's log.
//!
//! The backlog (jobs queued or running, the oldest's age, instances) is read here for the
//! metrics, the autoscaler's backlog policies and `plinth async status`.

use super::deployer::Fleet;
use super::variant::record_invocation;
use crate::state::catalog::AsyncInferenceConfig;
use crate::state::group_commit::{GroupCommit, Placed};
use crate::state::queue::{
    AsyncJob, DeliveryState, Notification, Object, QueueWrite, LOGGED_OBJECT_BYTES,
};
use crate::state::store::StoreError;
use plinth_policy::async_inference::{
    after_try, fate, notification, Backlog, Delivery, Ended, Fate, Finished, Queued, Tried,
};
use plinth_runtime::{Invocation, InvokeError};
use plinth_storage::Location;
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The queue runner's state: what wakes it, and the jobs running per endpoint.
#[derive(Default)]
pub(crate) struct AsyncJobs {
    wake: tokio::sync::Notify,
    running: Mutex<HashMap<String, usize>>,
    /// When each endpoint that could not run its jobs last had them looked at for expiry.
    swept: Mutex<HashMap<String, Instant>>,
    /// Wakes the notification loop.
    notify: tokio::sync::Notify,
    /// The queue's writes, committed in groups; started on first use.
    writer: std::sync::OnceLock<Result<GroupCommit, String>>,
    /// Per endpoint, its invocation slots (`MaxConcurrentInvocationsPerInstance` for each
    /// instance) and its start slots (twice as many: the jobs whose start is counted before
    /// a slot to invoke in comes free).
    invoking: Mutex<HashMap<String, Arc<Mutex<Slots>>>>,
}

/// A semaphore whose size follows a target. When it shrinks, the free permits go at once and
/// the rest as they are given back (a debt paid by [`Slot`]s as they drop), even while tasks
/// wait for them.
struct Resizable {
    permits: Arc<tokio::sync::Semaphore>,
    size: usize,
    debt: Arc<std::sync::atomic::AtomicUsize>,
}

impl Resizable {
    fn new(size: usize) -> Self {
        Self {
            permits: Arc::new(tokio::sync::Semaphore::new(size)),
            size,
            debt: Arc::default(),
        }
    }

    fn resize(&mut self, size: usize) {
        use std::sync::atomic::Ordering;
        if size > self.size {
            let mut grow = size - self.size;
            // Permits still owed are forgiven first.
            let _ = self
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                    let paid = d.min(grow);
                    grow -= paid;
                    Some(d - paid)
                });
            self.permits.add_permits(grow);
        } else if size < self.size {
            let shrink = self.size - size;
            let gone = self.permits.forget_permits(shrink);
            self.debt.fetch_add(shrink - gone, Ordering::AcqRel);
        }
        self.size = size;
    }

    /// A handle to wait for slots on, without holding the endpoint's slots locked.
    fn clone_handle(&self) -> Resizable {
        Resizable {
            permits: self.permits.clone(),
            size: self.size,
            debt: self.debt.clone(),
        }
    }

    /// A slot, waited for.
    async fn acquire(&self) -> Option<Slot> {
        let permit = self.permits.clone().acquire_owned().await.ok()?;
        Some(Slot {
            permit: Some(permit),
            debt: self.debt.clone(),
        })
    }
}

/// A held slot: given back when dropped, or kept (forgotten) while its semaphore owes
/// permits after shrinking.
struct Slot {
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    debt: Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        let owed = self
            .debt
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
            .is_ok();
        if let (true, Some(permit)) = (owed, self.permit.take()) {
            permit.forget();
        }
    }
}

/// An endpoint's slots: to invoke in, and to start in.
struct Slots {
    invoke: Resizable,
    start: Resizable,
}

/// Jobs claimed beyond those an endpoint may invoke at once: their inputs are read and their
/// results written while others are invoked, so that storage round trips and commits overlap
/// the invocations (each job still waits for an invocation slot).
const PIPELINE_DEPTH: usize = 256;

/// The fewest jobs claimed at once while every invocation slot is taken.
const CLAIM_BATCH: usize = 32;

impl AsyncJobs {
    /// `endpoint`'s slots (by its claiming key), resized to `room` invocations when given.
    fn slots(&self, endpoint: &str, room: Option<usize>) -> Arc<Mutex<Slots>> {
        let mut invoking = self.invoking.lock().unwrap_or_else(|e| e.into_inner());
        let slots = invoking
            .entry(endpoint.to_owned())
            .or_insert_with(|| {
                let size = room.unwrap_or(1);
                Arc::new(Mutex::new(Slots {
                    invoke: Resizable::new(size),
                    start: Resizable::new(2 * size),
                }))
            })
            .clone();
        if let Some(room) = room {
            let mut s = slots.lock().unwrap_or_else(|e| e.into_inner());
            s.invoke.resize(room);
            s.start.resize(2 * room);
        }
        slots
    }
}

/// Commit `write` to the queue (with the others waiting), `placed` (a local object written
/// for it) put in place and made durable first: once this returns `Ok`, it is stored.
pub(crate) async fn commit(
    state: &Fleet,
    write: QueueWrite,
    placed: Option<Placed>,
) -> Result<(), StoreError> {
    let writer = state.async_jobs.writer.get_or_init(|| {
        GroupCommit::start(state.stored.queue.clone())
            .map_err(|e| format!("the queue's writer could not start: {e}"))
    });
    match writer {
        Ok(writer) => writer.write(write, placed).await,
        Err(e) => Err(StoreError::Failed(e.clone())),
    }
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

/// An endpoint config's `AsyncInferenceConfig`, if it has one.
pub(crate) fn config_of(state: &Fleet, config_name: &str) -> Option<AsyncInferenceConfig> {
    state
        .catalog()
        .configs
        .get(config_name)
        .and_then(|c| c.definition.async_inference_config.clone())
}

/// `endpoint`'s backlog now: jobs queued or running, the oldest one's age, and the
/// instances of the variants serving it. `None` when the endpoint does not exist.
pub(crate) fn backlog(state: &Fleet, endpoint: &str) -> Option<Backlog> {
    let snapshot = state.endpoints.get(endpoint)?;
    let (size, oldest) = state.stored.queue.backlog(endpoint, snapshot.created);
    let instances: usize = snapshot
        .serving()
        .map(|v| v.live.serving.stats().instances)
        .sum();
    Some(Backlog {
        size,
        instances: instances as u64,
        oldest_age_seconds: oldest.map_or(0.0, |t| (crate::state::now() - t).max(0.0)),
    })
}

/// Run the queue until the process ends.
pub(crate) async fn run(state: Arc<Fleet>) {
    tokio::spawn(deliver(state.clone()));
    // What a stop left staged is not needed: every job it was for runs again.
    if let Ok(dir) = scratch(&state) {
        let _ = std::fs::remove_dir_all(&dir);
    }
    remove_partial_objects(&state);
    let interrupted = state.stored.queue.interrupted();
    if interrupted > 0 {
        tracing::info!(
            jobs = interrupted,
            "asynchronous jobs a stop interrupted are queued again"
        );
    }
    let mut forgotten = Instant::now();
    loop {
        // Claims are made in memory: here, on the async worker.
        start_ready(&state);
        if forgotten.elapsed() > Duration::from_secs(60) {
            forgotten = Instant::now();
            state.stored.queue.forget(crate::state::now());
        }
        // A job queued or finished wakes the runner; an endpoint that comes into service is
        // found within a second.
        let _ =
            tokio::time::timeout(Duration::from_secs(1), state.async_jobs.wake.notified()).await;
    }
}

/// Claim and start what each endpoint with queued jobs has room for.
fn start_ready(state: &Arc<Fleet>) {
    for endpoint in state.stored.queue.endpoints_with_jobs() {
        let Some(room) = room(state, &endpoint) else {
            expire(state, &endpoint);
            continue;
        };
        state.async_jobs.slots(&endpoint, Some(room));
        let free = (room + PIPELINE_DEPTH).saturating_sub(
            state
                .async_jobs
                .running()
                .get(&endpoint)
                .copied()
                .unwrap_or(0),
        );
        // Claims are commits: while the invocation slots are busy they wait for a batch
        // worth claiming.
        let invoking = state
            .async_jobs
            .slots(&endpoint, None)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .invoke
            .permits
            .available_permits();
        if free == 0 || (free < CLAIM_BATCH && invoking == 0) {
            continue;
        }
        for job in state.stored.queue.claim(&endpoint, free) {
            spawn(state, &endpoint, job);
        }
    }
}

/// Run a claimed job in its own task, counted as running for `endpoint`.
fn spawn(state: &Arc<Fleet>, endpoint: &str, job: AsyncJob) {
    *state
        .async_jobs
        .running()
        .entry(endpoint.to_owned())
        .or_default() += 1;
    let state = state.clone();
    // The running count goes down under the key it went up under.
    let endpoint = endpoint.to_owned();
    tokio::spawn(async move {
        let seq = job.seq;
        let outcome = std::panic::AssertUnwindSafe(run_job(&state, &endpoint, &job));
        let outcome = futures::FutureExt::catch_unwind(outcome).await;
        if outcome.is_err() {
            tracing::error!(endpoint = %endpoint, seq, "an asynchronous job's task panicked; it waits again");
            state.stored.queue.unclaim(seq);
        }
        if let Some(n) = state.async_jobs.running().get_mut(&endpoint) {
            *n = n.saturating_sub(1);
        }
        state.async_jobs.wake();
    });
}

/// How often the jobs of an endpoint that cannot run them are looked at for expiry.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// The most jobs one sweep fails.
const EXPIRED_PER_SWEEP: usize = 64;

/// The jobs of an endpoint that has no room for them (not serving, or no instance) that can
/// only fail are failed, as they would be when claimed: past their time to live, or sent to
/// the endpoint of that name before it was deleted and created again.
fn expire(state: &Arc<Fleet>, endpoint: &str) {
    let Some(snapshot) = state.endpoints.get(endpoint) else {
        return;
    };
    {
        let mut swept = state
            .async_jobs
            .swept
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let last = swept.entry(endpoint.to_owned()).or_insert_with(|| {
            Instant::now()
                .checked_sub(SWEEP_EVERY)
                .unwrap_or_else(Instant::now)
        });
        if last.elapsed() < SWEEP_EVERY {
            return;
        }
        *last = Instant::now();
    }
    let queue = &state.stored.queue;
    let doomed = queue.doomed(
        endpoint,
        crate::state::now(),
        snapshot.created,
        EXPIRED_PER_SWEEP,
    );
    for seq in doomed {
        // Claimed, it fails when run (`run_job`: expired, or `invoke`: the endpoint was
        // deleted).
        if let Some(job) = queue.claim_job(seq) {
            spawn(state, endpoint, job);
        }
    }
}

/// A job as `fate` decides on it.
fn queued(accepted: f64, attempts: u32, job: &serde_json::Value) -> Queued {
    use plinth_policy::async_inference::{INVOCATION_TIMEOUT_SECONDS, TTL_SECONDS};
    Queued {
        accepted,
        ttl_seconds: job["RequestTTLSeconds"].as_u64().unwrap_or(TTL_SECONDS.2),
        timeout_seconds: job["InvocationTimeoutSeconds"]
            .as_u64()
            .unwrap_or(INVOCATION_TIMEOUT_SECONDS.2),
        attempts,
    }
}

/// How many jobs `endpoint` may run at once: `MaxConcurrentInvocationsPerInstance` for each
/// instance of the variants serving it; `None` while it does not serve or has no instance
/// (its jobs can then only expire). A job of a deleted endpoint is claimed and failed.
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
    // With no instance (scaled to zero, or starting) the jobs wait; the autoscaler's backlog
    // policy starts one.
    (instances > 0).then_some(per_instance * instances)
}

/// Why a job did not produce its output.
enum Unfinished {
    /// It failed: this message goes to the failure object.
    Failed(String),
    /// The variant had no room (throttled, no instance yet): the job waits in the queue
    /// again, its start uncounted if it had been counted (the `bool`).
    Busy(String, bool),
}

impl From<String> for Unfinished {
    fn from(message: String) -> Self {
        Unfinished::Failed(message)
    }
}

/// How long reading an input or writing a result may take.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Run one job to its end: the output or the failure object written, then the job done with
/// its notification queued (or, when the variant had no room, back in the queue). `key` is
/// the endpoint's name as the runner claimed the job under.
async fn run_job(state: &Arc<Fleet>, key: &str, job: &AsyncJob) {
    let j = &job.job;
    let text = |key: &str| j[key].as_str().unwrap_or_default().to_string();
    let (output, failure) = (text("OutputLocation"), text("FailureLocation"));
    // A job that a stop interrupted after its output was written is complete.
    if job.attempts > 0 && exists(state, &output).await {
        let ended = Ended::Completed {
            location: &output,
            content_type: "",
        };
        let written = local_file(&output).map_or(Written::Uploaded, |path| {
            Written::Placed(Placed {
                staged: path.clone(),
                path,
            })
        });
        finish(state, job, &ended, None, written).await;
        return;
    }
    let result = match fate(&queued(job.accepted, job.attempts, j), crate::state::now()) {
        Fate::Fail(message) => Err(Unfinished::Failed(message)),
        Fate::Run => invoke(state, key, job).await,
    };
    let (message, response) = match result {
        Ok((body, content_type)) => {
            match tokio::time::timeout(TRANSFER_TIMEOUT, write(state, &body, &output)).await {
                Ok(Ok(file)) => {
                    let ended = Ended::Completed {
                        location: &output,
                        content_type: &content_type,
                    };
                    finish(state, job, &ended, Some(&body), file).await;
                    return;
                }
                Ok(Err(e)) => (
                    format!("The result could not be written to {output}: {e}"),
                    None,
                ),
                Err(_) => (
                    format!("The result could not be written to {output} within 15 minutes"),
                    None,
                ),
            }
        }
        Err(Unfinished::Failed(message)) => (message, None::<Vec<u8>>),
        Err(Unfinished::Busy(why, started)) => {
            tracing::debug!(endpoint = %job.endpoint, why = %why, "an asynchronous job waits for room");
            release(state, job, started).await;
            // Some room first: a throttled variant is not tried again at once.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return;
        }
    };
    let written =
        tokio::time::timeout(TRANSFER_TIMEOUT, write(state, message.as_bytes(), &failure))
            .await
            .unwrap_or_else(|_| Err("not written within 15 minutes".to_string()));
    // A failure object that could not be written is said so, where the job's end is
    // recorded and in its notification.
    let (reason, file) = match written {
        Ok(file) => (message, file),
        Err(e) => {
            tracing::error!(endpoint = %job.endpoint, failure_location = %failure, error = %e, "an asynchronous job's failure object could not be written");
            (
                format!("{message} (the failure object could not be written to {failure}: {e})"),
                Written::Uploaded,
            )
        }
    };
    let ended = Ended::Failed {
        location: &failure,
        reason: &reason,
    };
    finish(
        state,
        job,
        &ended,
        response.as_deref().or(Some(reason.as_bytes())),
        file,
    )
    .await;
}

/// The path of `location` when it is a local file.
fn local_file(location: &str) -> Option<std::path::PathBuf> {
    match Location::parse(location) {
        Ok(Location::Local(path)) => Some(path),
        _ => None,
    }
}

/// Put a claimed job back in the queue, its start uncounted when `uncount` (written to the
/// log; a claim is not, so without it nothing is).
async fn release(state: &Fleet, job: &AsyncJob, uncount: bool) {
    if uncount {
        let write = QueueWrite::Release {
            seq: job.seq,
            uncount,
        };
        // Unsynced, as a start is: appended here.
        match state.stored.queue.write(&[write]).pop().unwrap_or(Ok(())) {
            Ok(()) => return,
            Err(e) => {
                tracing::error!(endpoint = %job.endpoint, error = %e, "an asynchronous job's start could not be uncounted; it waits again with it counted");
            }
        }
    }
    state.stored.queue.unclaim(job.seq);
}

/// Record a job's end, with its notification when its config asks for one (the response
/// included when asked), and its total processing time; `file` is the object written for
/// it: kept in the end's record and put in place once it is written, or (a larger local one)
/// put in place and made durable before the end is committed. An end that cannot be
/// recorded puts the job back in the queue: it runs again (its object, if in place, makes it
/// complete).
async fn finish(
    state: &Fleet,
    job: &AsyncJob,
    ended: &Ended<'_>,
    response: Option<&[u8]>,
    file: Written,
) {
    let j = &job.job;
    let now = crate::state::now();
    let outcome = match ended {
        Ended::Completed { location, .. } => {
            json!({ "Status": "Completed", "OutputLocation": location })
        }
        Ended::Failed { location, reason } => {
            json!({ "Status": "Failed", "FailureLocation": location, "Message": reason })
        }
    };
    tracing::debug!(endpoint = %job.endpoint, inference_id = %j["InferenceId"], status = %outcome["Status"], "asynchronous job done");
    // The notification settings the request was accepted under.
    let topics = &j["Notification"];
    let (topic, include) = match ended {
        Ended::Completed { .. } => ("SuccessTopic", "SUCCESS_NOTIFICATION_TOPIC"),
        Ended::Failed { .. } => ("ErrorTopic", "ERROR_NOTIFICATION_TOPIC"),
    };
    let included = topics["IncludeInferenceResponseIn"]
        .as_array()
        .is_some_and(|a| a.iter().any(|v| v == include));
    let message = topics[topic].as_str().map(|url| {
        let finished = Finished {
            endpoint: &job.endpoint,
            inference_id: j["InferenceId"].as_str().unwrap_or(&job.id),
            input_location: j["InputLocation"].as_str().unwrap_or_default(),
            content_type: j["ContentType"].as_str().unwrap_or_default(),
            received: job.accepted,
            ended_at: now,
            ended: ended.clone(),
            response: response.filter(|_| included),
        };
        (
            url.to_owned(),
            notification(&finished, crate::state::identity::REGION),
        )
    });
    let notifies = message.is_some();
    let (object, placed) = match file {
        Written::Logged(object) => (Some(object), None),
        Written::Placed(placed) => (None, Some(placed)),
        Written::Uploaded => (None, None),
    };
    let write = QueueWrite::Finish {
        seq: job.seq,
        outcome,
        notification: message,
        object,
    };
    match commit(state, write, placed).await {
        Ok(()) => {
            let seconds = (now - job.accepted).max(0.0);
            state
                .metrics
                .total_processing_time
                .with_label_values(&[job.endpoint.as_str()])
                .observe(seconds);
            state
                .metrics
                .endpoint_publisher(&job.endpoint)
                .record("TotalProcessingTime", seconds * 1000.0);
            if notifies {
                state.async_jobs.notify.notify_one();
            }
        }
        Err(e) => {
            tracing::error!(endpoint = %job.endpoint, error = %e, "an asynchronous job's end could not be recorded; it goes back to the queue");
            release(state, job, false).await;
        }
    }
}

/// The most notifications tried at once.
const DELIVERIES_AT_ONCE: usize = 16;

/// How long one try of a notification may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Deliver the queued notifications until the process ends: each due one POSTed to its
/// webhook in its own task (at most [`DELIVERIES_AT_ONCE`] at a time, so that a slow
/// receiver holds up only its own), the try recorded, and one that failed tried again
/// later.
async fn deliver(state: Arc<Fleet>) {
    let client = match reqwest::Client::builder()
        .timeout(DELIVERY_TIMEOUT)
        .connect_timeout(Duration::from_secs(3))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("plinth/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "no HTTP client for asynchronous notifications; none is delivered");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(DELIVERIES_AT_ONCE));
    // The notifications being tried now, not to be taken again meanwhile.
    let trying: Arc<Mutex<std::collections::HashSet<i64>>> = Arc::default();
    loop {
        let due = state
            .stored
            .queue
            .due_notifications(crate::state::now(), DELIVERIES_AT_ONCE * 4);
        for n in due {
            if !trying
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(n.seq)
            {
                continue;
            }
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (state, client, trying) = (state.clone(), client.clone(), trying.clone());
            tokio::spawn(async move {
                let seq = n.seq;
                try_once(&state, &client, n).await;
                trying
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&seq);
                drop(slot);
            });
        }
        // A finished job wakes the loop; retries come due within a second.
        let _ =
            tokio::time::timeout(Duration::from_secs(1), state.async_jobs.notify.notified()).await;
    }
}

/// Try to deliver one notification, and record what became of it.
async fn try_once(state: &Fleet, client: &reqwest::Client, n: Notification) {
    let attempts = n.attempts + 1;
    let sent = client
        .post(&n.url)
        .header("content-type", "application/json")
        .body(n.message.clone())
        .send()
        .await;
    let tried = match &sent {
        Ok(response) => Tried::Answered(response.status().as_u16()),
        Err(e) => Tried::NoAnswer(format!("no answer: {e}")),
    };
    let last = match &tried {
        Tried::Answered(status) => status.to_string(),
        Tried::NoAnswer(why) => why.clone(),
    };
    let (delivery, next_at, result) = match after_try(&tried, attempts) {
        Delivery::Delivered => (DeliveryState::Delivered, 0.0, "Delivered"),
        Delivery::RetryIn(seconds) => (
            DeliveryState::Pending,
            crate::state::now() + seconds as f64,
            "Retried",
        ),
        Delivery::GaveUp(why) => {
            tracing::warn!(endpoint = %n.endpoint, url = %n.url, %why, "an asynchronous notification was not delivered");
            (DeliveryState::Failed, 0.0, "Failed")
        }
    };
    state
        .metrics
        .notifications
        .with_label_values(&[n.endpoint.as_str(), result])
        .inc();
    let write = QueueWrite::Delivery {
        seq: n.seq,
        attempts,
        state: delivery,
        next_at,
        last_try: last,
    };
    if let Err(e) = commit(state, write, None).await {
        tracing::error!(endpoint = %n.endpoint, error = %e, "a notification's delivery could not be recorded; it is tried again");
    }
}

/// Whether there is an object at `location`.
async fn exists(state: &Fleet, location: &str) -> bool {
    let Ok(parsed) = Location::parse(location) else {
        return false;
    };
    state.stored.remote.storage().head(&parsed).await.is_ok()
}

/// The job's input, its variant invoked on it: the response body and content type, or why
/// not. `key` names the endpoint's slots.
async fn invoke(state: &Fleet, key: &str, job: &AsyncJob) -> Result<(Vec<u8>, String), Unfinished> {
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
    let routed = snapshot
        .route(None, None)
        .map_err(|e| Unfinished::Busy(e.to_string(), false))?;
    let variant = routed.variant.clone();
    if variant.serving.stats().instances == 0 {
        // Routed to a variant scaled to zero beside one that is not: the input is not read
        // for it; the job is claimed again and routed again.
        return Err(Unfinished::Busy(
            format!("variant {} has no instance", variant.name),
            false,
        ));
    }
    // A start slot first (at most twice as many jobs as the endpoint may invoke at once):
    // only then is the input read (so that at most that many are staged at once) and the
    // start counted (so that the jobs that only wait in the pipeline when a stop comes are
    // not charged one); the start's commit overlaps the invocations ahead.
    let slots = state.async_jobs.slots(key, None);
    let (start_slots, invoke_slots) = {
        let s = slots.lock().unwrap_or_else(|e| e.into_inner());
        (s.start.clone_handle(), s.invoke.clone_handle())
    };
    let closed = |started| Unfinished::Busy("the invocation slots are closed".into(), started);
    let _start = start_slots.acquire().await.ok_or_else(|| closed(false))?;
    let input = j["InputLocation"].as_str().unwrap_or_default();
    // The input goes whole into the guest's memory: one larger than the model's memory
    // cannot fit, and is not read.
    let memory = variant.model.memory_bytes as u64;
    let body = tokio::time::timeout(TRANSFER_TIMEOUT, read(state, input, memory))
        .await
        .map_err(|_| format!("The input could not be read from {input} within 15 minutes"))??;
    let request = Arc::new(Invocation {
        body,
        content_type: j["ContentType"].as_str().unwrap_or_default().to_string(),
        accept: j["Accept"].as_str().unwrap_or_default().to_string(),
        inference_id: j["InferenceId"].as_str().unwrap_or(&job.id).to_string(),
        deadline: None,
        custom_attributes: j["CustomAttributes"].as_str().map(str::to_string),
    });
    let timeout = Duration::from_secs(j["InvocationTimeoutSeconds"].as_u64().unwrap_or(900));
    // Appended here, unsynced (`Queue::write`): a few microseconds, no hand-off.
    if let Some(Err(e)) = state
        .stored
        .queue
        .write(&[QueueWrite::Start { seq: job.seq }])
        .pop()
    {
        return Err(Unfinished::Busy(
            format!("its start could not be recorded: {e}"),
            false,
        ));
    }
    // MaxConcurrentInvocationsPerInstance: one of the endpoint's invocation slots.
    let _slot = invoke_slots.acquire().await.ok_or_else(|| closed(true))?;
    // Its time to live counts until now: it may have waited in the pipeline.
    if let Fate::Fail(message) = fate(&queued(job.accepted, job.attempts, j), crate::state::now()) {
        return Err(Unfinished::Failed(message));
    }
    let (started, started_at) = (std::time::Instant::now(), crate::state::now());
    let held = variant
        .serving
        .hold(None, None, &variant.name, &variant.model_name)
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
        return Err(Unfinished::Busy(e.to_string(), true));
    }
    if job.attempts == 0 {
        // It ran: the time it waited, once.
        let seconds = (started_at - job.accepted).max(0.0);
        state
            .metrics
            .time_in_backlog
            .with_label_values(&[job.endpoint.as_str()])
            .observe(seconds);
        state
            .metrics
            .endpoint_publisher(&job.endpoint)
            .record("TimeInBacklog", seconds * 1000.0);
    }
    let error = record_invocation(&variant, &result, started);
    match result {
        Ok(output) => Ok((output.body, output.content_type)),
        Err(_) => Err(Unfinished::Failed(error.map_or_else(
            || "the invocation failed".to_string(),
            |e| e.message().to_string(),
        ))),
    }
}

/// The most an asynchronous input may be (SageMaker's 1 GB).
const MAX_INPUT_BYTES: u64 = 1 << 30;

/// Inputs up to this size are read straight into memory; larger ones are staged and mapped.
const SMALL_INPUT_BYTES: u64 = 1 << 20;

/// The bytes at `location`, through the storage layer: a small local file read at once;
/// anything else staged in a file under the artifacts directory and mapped, so that the host
/// never holds a second copy on its heap; refused unread when larger than `memory` (the
/// model's memory) or 1 GB.
async fn read(state: &Fleet, location: &str, memory: u64) -> Result<bytes::Bytes, String> {
    let parsed =
        Location::parse(location).map_err(|e| format!("InputLocation {location:?}: {e}"))?;
    let cap = MAX_INPUT_BYTES.min(memory);
    if let Location::Local(path) = &parsed {
        // Checked when the request came; checked again now, by the file opened (in case
        // the path has become a link leading elsewhere since), and read from it. A small
        // local file is read here, on the async worker: a few microseconds of file system
        // calls cost less than a hand-off to the blocking pool.
        let (mut file, _) =
            state
                .stored
                .roots
                .open("InputLocation", &path.display().to_string(), true)?;
        let meta = file
            .metadata()
            .map_err(|e| format!("The input could not be read from {location}: {e}"))?;
        if !meta.is_file() {
            return Err(format!("InputLocation {location:?} is not a file"));
        }
        if meta.len() > cap {
            return Err(too_large(location, meta.len(), memory));
        }
        if meta.len() <= SMALL_INPUT_BYTES {
            // At most one byte past the cap: one that grew since is refused below.
            let mut bytes = Vec::with_capacity(meta.len() as usize);
            std::io::Read::read_to_end(&mut std::io::Read::take(&mut file, cap + 1), &mut bytes)
                .map_err(|e| format!("The input could not be read from {location}: {e}"))?;
            if bytes.len() as u64 > cap {
                return Err(too_large(location, bytes.len() as u64, memory));
            }
            return Ok(bytes.into());
        }
    }
    let storage = state.stored.remote.storage();
    let size = storage
        .head(&parsed)
        .await
        .map_err(|e| format!("The input could not be read from {location}: {e}"))?
        .size;
    if size > cap {
        return Err(too_large(location, size, memory));
    }
    let dir = scratch(state).map_err(|e| format!("InputLocation {location}: {e}"))?;
    // The cap again while reading: the object may have grown since.
    let downloaded = storage
        .download(&parsed, &dir, cap)
        .await
        .map_err(|e| format!("The input could not be read from {location}: {e}"))?;
    if downloaded.size == 0 {
        return Ok(bytes::Bytes::new());
    }
    // SAFETY: the file is this process's own staged copy (a fresh temporary file no other
    // process writes); it is unlinked when `downloaded` drops, and the mapping keeps its
    // pages until the bytes are dropped.
    #[allow(unsafe_code)]
    let map = unsafe { memmap2::Mmap::map(downloaded.file.as_file()) }
        .map_err(|e| format!("The input could not be read from {location}: {e}"))?;
    Ok(bytes::Bytes::from_owner(map))
}

/// The failure for an input the model's memory cannot hold.
fn too_large(location: &str, size: u64, memory: u64) -> String {
    if size > MAX_INPUT_BYTES {
        format!("The input at {location} is {size} bytes, more than the 1 GB an asynchronous request may be")
    } else {
        format!(
            "The input at {location} is {size} bytes, more than the model's memory ({memory} bytes, \
             PlinthLimits.MemorySizeInMB) can hold"
        )
    }
}

/// An object written for a job's end, and how it becomes durable.
enum Written {
    /// A small local one, staged beside its place: kept in the end's record, renamed into
    /// place once that is written (`state::queue`).
    Logged(Object),
    /// A larger local one, staged beside its place: the group commit syncs it, renames it
    /// into place and syncs the name before the end is committed (`state::group_commit`).
    Placed(Placed),
    /// Uploaded whole (or nothing to write).
    Uploaded,
}

/// Write `bytes` to `location` whole: staged in a file beside it (a small one on the async
/// worker, a large one on the blocking pool), then uploaded (one object); or, for a local
/// path, left staged, to be put in place with the job's end, so that a reader never sees
/// part of it and a power failure never leaves a recorded end with an empty object.
async fn write(state: &Fleet, bytes: &[u8], location: &str) -> Result<Written, String> {
    let parsed = Location::parse(location).map_err(|e| format!("{location:?}: {e}"))?;
    let (local, dir) = match &parsed {
        Location::Local(path) => (
            Some(path.clone()),
            path.parent().map(Path::to_path_buf).unwrap_or_default(),
        ),
        _ => (None, scratch(state)?),
    };
    /// What staging left: a local file to put in place, or a file to upload.
    enum Staged {
        Local(Placed),
        Upload(tempfile::NamedTempFile),
    }
    let stage = move |bytes: &[u8]| -> Result<Staged, String> {
        use std::io::Write;
        let mut staged = tempfile::Builder::new()
            .prefix(".partial-")
            .tempfile_in(&dir)
            .map_err(|e| format!("cannot stage the object in {}: {e}", dir.display()))?;
        staged
            .write_all(bytes)
            .map_err(|e| format!("cannot stage the object: {e}"))?;
        match local {
            Some(path) => {
                let staged = staged
                    .into_temp_path()
                    .keep()
                    .map_err(|e| format!("cannot stage the object: {e}"))?;
                Ok(Staged::Local(Placed { staged, path }))
            }
            None => Ok(Staged::Upload(staged)),
        }
    };
    // A small object is staged here, on the async worker (as a small input is read); a
    // large one on the blocking pool.
    let staged = if bytes.len() as u64 <= SMALL_INPUT_BYTES {
        stage(bytes)?
    } else {
        let bytes = bytes.to_vec();
        tokio::task::spawn_blocking(move || stage(&bytes))
            .await
            .map_err(|e| format!("cannot stage the object: {e}"))??
    };
    match staged {
        Staged::Local(placed) if bytes.len() <= LOGGED_OBJECT_BYTES => {
            Ok(Written::Logged(Object {
                staged: placed.staged,
                path: placed.path,
                bytes: bytes::Bytes::copy_from_slice(bytes),
            }))
        }
        Staged::Local(placed) => Ok(Written::Placed(placed)),
        Staged::Upload(staged) => {
            state
                .stored
                .remote
                .storage()
                .upload(staged.path(), &parsed)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Written::Uploaded)
        }
    }
}

/// Remove the objects a stop left staged (`.partial-*`) in the asynchronous endpoint
/// configs' local output and failure directories: their jobs run again.
fn remove_partial_objects(state: &Fleet) {
    let dirs: std::collections::BTreeSet<String> = state
        .catalog()
        .configs
        .values()
        .filter_map(|c| c.definition.async_inference_config.as_ref())
        .flat_map(|a| {
            let o = &a.output_config;
            [o.s3_output_path.clone(), o.s3_failure_path.clone()]
        })
        .flatten()
        .filter(|d| !d.starts_with("s3://"))
        .collect();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".partial-") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Where inputs and results are staged: `artifacts/async`.
fn scratch(state: &Fleet) -> Result<std::path::PathBuf, String> {
    let dir = state.stored.artifacts.join("async");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}
