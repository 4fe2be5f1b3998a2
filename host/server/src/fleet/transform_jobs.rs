//! Batch transform's runner: a transform job (stored by CreateTransformJob, `InProgress`)
//! runs in its own task. Its model gets `TransformResources.InstanceCount` instances of its
//! own (a pool built as an endpoint's variant would be, counted against the server's
//! instance limit, with no endpoint). The objects under the input prefix (or named by the
//! manifest), as listed when the job first runs, are kept in the store as the job's inputs.
//! Each is read through the storage layer (a local file where it is, any other into a
//! scratch file first), split into records and
//! packed into requests (`plinth_policy::batch_transform`) by a blocking reader that streams
//! the file, so that only the requests in flight are in memory; up to
//! `MaxConcurrentTransforms` requests per input are prepared ahead, and each is sent when
//! one of the instances is free, with the job's invocation timeout and retries; the
//! responses are assembled in order into a staged output (beside its place when local, in
//! scratch otherwise) that is written whole to `<S3OutputPath>/<input>.out` (a synced
//! rename, or one upload) only once every record of the input succeeded. Each completed
//! input is recorded in the store, so that a job a stop interrupted resumes at start from
//! the inputs not yet complete. StopTransformJob sets a
//! flag and wakes what waits on a build, a transfer or an answer: the job is `Stopped` at
//! once, its completed outputs left in place. With `PlinthCompareModels`, every request
//! goes to each model, each model's outputs under a prefix of its own, and each compared
//! model's answers are judged against the job's model's, record by record.

use super::deployer::Fleet;
use crate::state::store::TransformInput;
use plinth_policy::batch_transform::{
    self as policy, DataProcessing, Packed, Packer, Settings, Split,
};
use plinth_runtime::{Invocation, InvokeError};
use plinth_storage::Location;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The transform jobs running now.
#[derive(Default)]
pub(crate) struct TransformJobs {
    running: Mutex<HashMap<String, Arc<Running>>>,
}

/// A running job: its stop flag, its instances, and its progress.
#[derive(Default)]
pub(crate) struct Running {
    stop: AtomicBool,
    /// Wakes what waits on a transfer or a build when the job is asked to stop.
    stopping: tokio::sync::Notify,
    instances: AtomicU64,
    pub(crate) progress: Progress,
}

/// What a job has done, live: records as their requests are answered, bytes as the
/// inputs are read.
#[derive(Default)]
pub(crate) struct Progress {
    inputs: AtomicU64,
    inputs_completed: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
    bytes_total: AtomicU64,
    /// Per compared model (`PlinthCompareModels`, in order), its agreement so far.
    compared: Mutex<Vec<(String, policy::Agreement)>>,
}

impl Progress {
    /// As `DescribeTransformJob` reports it (`PlinthProgress`), and as the store keeps it.
    pub(crate) fn to_json(&self) -> Value {
        let mut progress = json!({
            "Inputs": self.inputs.load(Ordering::Relaxed),
            "InputsCompleted": self.inputs_completed.load(Ordering::Relaxed),
            "RecordsCompleted": self.records.load(Ordering::Relaxed),
            "BytesCompleted": self.bytes.load(Ordering::Relaxed),
            "BytesTotal": self.bytes_total.load(Ordering::Relaxed),
        });
        let comparison = self.comparison_json();
        if comparison.as_array().is_some_and(|c| !c.is_empty()) {
            progress["Comparison"] = comparison;
        }
        progress
    }

    /// Per compared model (`PlinthCompareModels`), its records and how many agree with
    /// the job's model's (exact, close, same class), with the shares.
    fn comparison_json(&self) -> Value {
        let compared = self.compared.lock().unwrap_or_else(|e| e.into_inner());
        Value::Array(compared.iter().map(|(m, a)| agreement_json(m, a)).collect())
    }

    fn add_compared(&self, agreements: &[policy::Agreement]) {
        let mut compared = self.compared.lock().unwrap_or_else(|e| e.into_inner());
        for ((_, total), a) in compared.iter_mut().zip(agreements) {
            total.add(*a);
        }
    }
}

/// One compared model's agreement, as `PlinthComparison` lists it.
fn agreement_json(model: &str, a: &policy::Agreement) -> Value {
    let share = |n: u64| {
        if a.records == 0 {
            0.0
        } else {
            n as f64 / a.records as f64
        }
    };
    json!({
        "ModelName": model,
        "Records": a.records,
        "Exact": a.exact,
        "Close": a.close,
        "SameClass": a.argmax,
        "ExactShare": share(a.exact),
        "CloseShare": share(a.close),
        "SameClassShare": share(a.argmax),
    })
}

impl Running {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Once the job is asked to stop.
    async fn until_stopped(&self) {
        loop {
            let notified = self.stopping.notified();
            if self.stopped() {
                return;
            }
            notified.await;
        }
    }
}

impl TransformJobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Running>>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The instances the running jobs hold.
    pub(crate) fn instances(&self) -> usize {
        self.lock()
            .values()
            .map(|r| r.instances.load(Ordering::Relaxed) as usize)
            .sum()
    }

    /// Job `name`, if it is running.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<Running>> {
        self.lock().get(name).cloned()
    }

    /// Ask job `name` to stop; whether it was running.
    pub(crate) fn stop(&self, name: &str) -> bool {
        match self.get(name) {
            Some(running) => {
                running.stop.store(true, Ordering::Release);
                running.stopping.notify_waiters();
                true
            }
            None => false,
        }
    }
}

/// Start running job `name` (stored `InProgress`), its `instances` held from now on (the
/// caller checked them against the server's limit, under `state.changes`).
pub(crate) fn start(state: &Arc<Fleet>, name: &str, instances: usize) {
    let running = Arc::new(Running::default());
    running.instances.store(instances as u64, Ordering::Relaxed);
    state
        .transform_jobs
        .lock()
        .insert(name.to_owned(), running.clone());
    let (state, name) = (state.clone(), name.to_owned());
    tokio::spawn(async move {
        // In a task of its own: a panic fails the job rather than leaving it running.
        let outcome = {
            let (state, name, running) = (state.clone(), name.clone(), running.clone());
            tokio::spawn(async move { transform(&state, &name, running).await })
                .await
                .unwrap_or_else(|e| Err(format!("the job's runner failed: {e}")))
        };
        let _ = std::fs::remove_dir_all(scratch(&state, &name));
        // What it did, as it ended (records and bytes of the inputs it was in the middle
        // of included).
        let _ = state
            .stored
            .store
            .set_transform_progress(&name, &running.progress.to_json());
        let store = &state.stored.store;
        let now = crate::state::now();
        let stopped = running.stopped();
        let result = match outcome {
            Ok(()) if !stopped => {
                tracing::info!(transform_job = %name, "transform job completed");
                // A job that completed as a stop came is complete.
                store.set_transform_status(
                    &name,
                    &["InProgress", "Stopping"],
                    "Completed",
                    None,
                    Some(now),
                )
            }
            Err(reason) if !stopped => {
                tracing::warn!(transform_job = %name, reason = %reason, "transform job failed");
                store.set_transform_status(
                    &name,
                    &["InProgress", "Stopping"],
                    "Failed",
                    Some(&reason),
                    Some(now),
                )
            }
            _ => {
                tracing::info!(transform_job = %name, "transform job stopped");
                store.set_transform_status(
                    &name,
                    &["InProgress", "Stopping"],
                    "Stopped",
                    None,
                    Some(now),
                )
            }
        };
        if let Err(e) = result {
            tracing::error!(transform_job = %name, error = %e, "the transform job's end could not be recorded; it runs again after a restart");
        }
        state.transform_jobs.lock().remove(&name);
    });
}

/// At start: the jobs a stop interrupted run again (from the inputs not yet complete); the
/// ones that were stopping are stopped.
pub(crate) fn resume(state: &Arc<Fleet>) {
    let jobs = match state.stored.store.transform_jobs(None) {
        Ok(jobs) => jobs,
        Err(e) => {
            tracing::error!(error = %e, "the transform jobs could not be read");
            return;
        }
    };
    // What the outputs' uploads a stop cut short left beside them, before any job runs
    // again (one job's output directory may hold another's).
    for job in jobs.iter().filter(|j| j.status == "InProgress") {
        if let Some(Location::Local(dir)) = job.definition["TransformOutput"]["S3OutputPath"]
            .as_str()
            .and_then(|p| Location::parse(p).ok())
        {
            remove_partial_files(&dir);
        }
    }
    for job in jobs {
        match job.status.as_str() {
            "InProgress" => {
                tracing::info!(transform_job = %job.name, "a transform job a stop interrupted goes on");
                let instances = settings_of(&job.definition).map_or(1, |s| s.instances)
                    * models_of(&job.definition).len();
                start(state, &job.name, instances);
            }
            "Stopping" => {
                let _ = state.stored.store.set_transform_status(
                    &job.name,
                    &["Stopping"],
                    "Stopped",
                    None,
                    Some(crate::state::now()),
                );
            }
            _ => {}
        }
    }
}

/// Remove the `.partial-*` files (uploads a stop cut short) under `dir`.
fn remove_partial_files(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && !path.is_symlink() {
            remove_partial_files(&path);
        } else if entry.file_name().to_string_lossy().starts_with(".partial-") {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Where job `name` stages its inputs and outputs.
fn scratch(state: &Fleet, name: &str) -> std::path::PathBuf {
    state.stored.artifacts.join("transform").join(name)
}

/// The settings of a CreateTransformJob input (checked when it was created).
pub(crate) fn settings_of(definition: &Value) -> Result<Settings, String> {
    let int = |v: &Value| v.as_i64();
    policy::settings(&policy::Given {
        max_concurrent_transforms: int(&definition["MaxConcurrentTransforms"]),
        max_payload_mb: int(&definition["MaxPayloadInMB"]),
        batch_strategy: definition["BatchStrategy"].as_str(),
        split_type: definition["TransformInput"]["SplitType"].as_str(),
        assemble_with: definition["TransformOutput"]["AssembleWith"].as_str(),
        invocations_timeout_seconds: int(
            &definition["ModelClientConfig"]["InvocationsTimeoutInSeconds"]
        ),
        invocations_max_retries: int(&definition["ModelClientConfig"]["InvocationsMaxRetries"]),
        instance_count: int(&definition["TransformResources"]["InstanceCount"]).unwrap_or(0),
    })
    .map_err(|e| e.0)
}

/// The `DataProcessing` of a CreateTransformJob input (checked when it was created):
/// `None` when it does nothing.
pub(crate) fn processing_of(definition: &Value) -> Result<Option<DataProcessing>, String> {
    let dp = &definition["DataProcessing"];
    policy::data_processing(&policy::GivenProcessing {
        input_filter: dp["InputFilter"].as_str(),
        output_filter: dp["OutputFilter"].as_str(),
        join_source: dp["JoinSource"].as_str(),
        content_type: definition["TransformInput"]["ContentType"].as_str(),
        accept: definition["TransformOutput"]["Accept"].as_str(),
        split_type: definition["TransformInput"]["SplitType"].as_str(),
    })
    .map_err(|e| e.0)
}

/// A location a job names: `s3://`, or a local path under the artifact roots.
pub(crate) fn location(state: &Fleet, field: &str, text: &str) -> Result<Location, String> {
    let location = Location::parse(text).map_err(|e| format!("{field} {text:?}: {e}"))?;
    match location {
        Location::Local(_) => {
            let checked = state.stored.roots.check(field, text)?;
            Ok(Location::Local(checked.into()))
        }
        remote => Ok(remote),
    }
}

/// How long writing one output may take.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// One input object: its name relative to the input prefix, and where it is.
struct Input {
    name: String,
    location: Location,
    /// Bytes, when listed (0: not known).
    size: u64,
}

/// What one input's run shares with the others.
struct Job {
    name: String,
    settings: Settings,
    processing: Option<DataProcessing>,
    content_type: String,
    accept: String,
    gzip: bool,
    /// The job's model first, then those compared with it (`PlinthCompareModels`).
    models: Vec<ModelRun>,
    storage: Arc<plinth_storage::Storage>,
    scratch: std::path::PathBuf,
    running: Arc<Running>,
}

/// One model a job runs.
struct ModelRun {
    name: String,
    variant: Arc<super::variant::LiveVariant>,
    /// One per instance: a request is sent only when one is free, so that its timeout
    /// counts its own run, not a wait behind the job's other requests.
    slots: tokio::sync::Semaphore,
    /// Where its outputs go.
    output: Location,
}

/// The models a job runs: its `ModelName`, then its `PlinthCompareModels`.
pub(crate) fn models_of(definition: &Value) -> Vec<String> {
    std::iter::once(&definition["ModelName"])
        .chain(
            definition["PlinthCompareModels"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default(),
        )
        .filter_map(|m| m.as_str().map(str::to_owned))
        .collect()
}

/// Run job `name` to its end: `Ok` once every input is complete (or the job was asked to
/// stop), the failure reason otherwise.
async fn transform(state: &Arc<Fleet>, name: &str, running: Arc<Running>) -> Result<(), String> {
    let row = state
        .stored
        .store
        .transform_jobs(Some(name))
        .map_err(|e| e.to_string())?
        .pop()
        .ok_or_else(|| format!("transform job {name} is not stored"))?;
    let d = &row.definition;
    let settings = settings_of(d)?;
    let source = &d["TransformInput"]["DataSource"]["S3DataSource"];
    let uri = source["S3Uri"].as_str().unwrap_or_default();
    let scratch = scratch(state, name);
    // What a stop left staged is not needed: its inputs run again.
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)
        .map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
    let mut listed = state
        .stored
        .store
        .transform_inputs(name)
        .map_err(|e| e.to_string())?;
    if listed.is_empty() {
        // The first run: the inputs as listed now are the job's for good.
        let found = inputs(state, source["S3DataType"].as_str(), uri, &scratch).await?;
        let kept: Vec<TransformInput> = found
            .iter()
            .map(|i| TransformInput {
                name: i.name.clone(),
                location: i.location.to_string(),
                size: i.size,
                done: None,
                compared: Value::Null,
            })
            .collect();
        state
            .stored
            .store
            .set_transform_inputs(name, &kept)
            .map_err(|e| format!("the inputs could not be recorded: {e}"))?;
        listed = state
            .stored
            .store
            .transform_inputs(name)
            .map_err(|e| e.to_string())?;
    }
    let output = location(
        state,
        "TransformOutput.S3OutputPath",
        d["TransformOutput"]["S3OutputPath"]
            .as_str()
            .unwrap_or_default(),
    )?;
    let p = &running.progress;
    p.inputs.store(listed.len() as u64, Ordering::Relaxed);
    *p.compared.lock().unwrap_or_else(|e| e.into_inner()) = models_of(d)
        .into_iter()
        .skip(1)
        .map(|m| (m, policy::Agreement::default()))
        .collect();
    let mut pending = Vec::new();
    for input in listed {
        p.bytes_total.fetch_add(input.size, Ordering::Relaxed);
        match input.done {
            Some((records, bytes)) => {
                p.inputs_completed.fetch_add(1, Ordering::Relaxed);
                p.records.fetch_add(records, Ordering::Relaxed);
                p.bytes.fetch_add(bytes, Ordering::Relaxed);
                let agreements: Vec<policy::Agreement> = input
                    .compared
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|a| policy::Agreement {
                        records: a[0].as_u64().unwrap_or(0),
                        exact: a[1].as_u64().unwrap_or(0),
                        close: a[2].as_u64().unwrap_or(0),
                        argmax: a[3].as_u64().unwrap_or(0),
                    })
                    .collect();
                p.add_compared(&agreements);
            }
            None => {
                // A local input under the roots again (a link may have changed).
                let location = location(state, "an input", &input.location)?;
                pending.push(Input {
                    name: input.name,
                    location,
                    size: input.size,
                });
            }
        }
    }
    if pending.is_empty() {
        // Every input was complete when a stop came.
        return Ok(());
    }
    let names = models_of(d);
    let comparing = names.len() > 1;
    let mut models = Vec::with_capacity(names.len());
    for model in &names {
        let label = format!("transform-job/{name}/{model}");
        let unresolved = state
            .catalog()
            .unresolved_model(&label, model, settings.instances)?;
        let built = tokio::select! {
            built = super::assemble::build(state, &label, unresolved, &[], &[]) => built?,
            () = running.until_stopped() => return Ok(()),
        };
        let variant = built
            .variants
            .into_iter()
            .next()
            .map(|v| v.live)
            .ok_or_else(|| format!("model {model}'s instances could not be built"))?;
        models.push(ModelRun {
            name: model.clone(),
            variant,
            slots: tokio::sync::Semaphore::new(settings.instances),
            // Compared, each model's outputs under a prefix of its own.
            output: if comparing {
                output.join(model)
            } else {
                output.clone()
            },
        });
    }
    let job = Arc::new(Job {
        name: name.to_owned(),
        settings,
        processing: processing_of(d)?,
        content_type: d["TransformInput"]["ContentType"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        accept: d["TransformOutput"]["Accept"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        gzip: d["TransformInput"]["CompressionType"] == "Gzip",
        models,
        storage: state.stored.remote.storage().clone(),
        scratch: scratch.clone(),
        running: running.clone(),
    });
    // One input per instance at a time, each with its instance's concurrent requests.
    use futures::StreamExt;
    let mut runs = futures::stream::iter(pending)
        .map(|input| {
            let (job, running) = (job.clone(), running.clone());
            async move {
                let result = transform_input(&job, &input, &running).await;
                (input, result)
            }
        })
        .buffer_unordered(job.settings.instances);
    while let Some((input, result)) = runs.next().await {
        match result {
            // Its records, bytes and agreement were counted as they went.
            Ok(Some((records, bytes, agreements))) => {
                p.inputs_completed.fetch_add(1, Ordering::Relaxed);
                let compared: Vec<Value> = agreements
                    .iter()
                    .map(|a| json!([a.records, a.exact, a.close, a.argmax]))
                    .collect();
                state
                    .stored
                    .store
                    .transform_input_done(
                        name,
                        &input.name,
                        (records, bytes),
                        &Value::Array(compared),
                        &p.to_json(),
                    )
                    .map_err(|e| format!("the progress could not be recorded: {e}"))?;
            }
            // Stopped.
            Ok(None) => {}
            // The other inputs' runs end here (dropped), none of their outputs written.
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The job's inputs, in name order: the objects under the `S3Prefix`, or those a manifest
/// names. None is an error, as SageMaker says it.
async fn inputs(
    state: &Fleet,
    data_type: Option<&str>,
    uri: &str,
    scratch: &std::path::Path,
) -> Result<Vec<Input>, String> {
    let field = "TransformInput.DataSource.S3DataSource.S3Uri";
    let source = location(state, field, uri)?;
    let inputs = match data_type {
        Some("ManifestFile") => {
            let file = state
                .stored
                .remote
                .storage()
                .download(&source, scratch, 64 << 20)
                .await
                .map_err(|e| format!("the manifest file could not be read: {e}"))?;
            let text = std::fs::read_to_string(file.file.path())
                .map_err(|e| format!("the manifest file could not be read: {e}"))?;
            let (prefix, keys) = policy::manifest(&text).map_err(|e| e.0)?;
            let prefix = location(state, "the manifest's prefix", &prefix)?;
            keys.into_iter()
                .map(|name| {
                    let location = match prefix.join(&name) {
                        // Each file under the roots too (a link may lead out).
                        Location::Local(path) => {
                            location(state, "a manifest's key", &path.display().to_string())?
                        }
                        remote => remote,
                    };
                    Ok(Input {
                        location,
                        name,
                        size: 0,
                    })
                })
                .collect::<Result<_, String>>()?
        }
        _ => state
            .stored
            .remote
            .storage()
            .list(&source)
            .await
            .map_err(|e| format!("the input objects could not be listed: {e}"))?
            .into_iter()
            .map(|o| Input {
                location: source.join(&o.key),
                size: o.size,
                name: o.key,
            })
            .collect(),
    };
    let mut inputs: Vec<Input> = inputs;
    let one_object = match &source {
        Location::Local(path) => path.is_file(),
        Location::S3 { .. } => true,
    };
    if inputs.is_empty() && data_type != Some("ManifestFile") && one_object {
        // The URI may name one object.
        if let Ok(object) = state.stored.remote.storage().head(&source).await {
            let name = object
                .key
                .rsplit('/')
                .next()
                .unwrap_or(&object.key)
                .to_owned();
            if !name.is_empty() {
                inputs.push(Input {
                    name,
                    size: object.size,
                    location: source,
                });
            }
        }
    }
    if inputs.is_empty() {
        return Err(format!(
            "No S3 objects found under S3 URL \"{uri}\" given in input data source."
        ));
    }
    Ok(inputs)
}

/// Run one input: its `.out` written whole; its records and bytes. `None` when the job
/// was asked to stop first.
async fn transform_input(
    job: &Job,
    input: &Input,
    running: &Arc<Running>,
) -> Result<Option<(u64, u64, Vec<policy::Agreement>)>, String> {
    if running.stopped() {
        return Ok(None);
    }
    let failed = |e: String| format!("{}: {e}", input.location);
    let storage = &job.storage;
    // A local input is read where it is (checked under the roots when the job started);
    // any other is read into a scratch file first.
    let (path, bytes, _downloaded) = match &input.location {
        Location::Local(path) => {
            let size = std::fs::metadata(path)
                .map_err(|e| failed(format!("the input could not be read: {e}")))?
                .len();
            (path.clone(), size, None)
        }
        remote => {
            let downloaded = tokio::select! {
                downloaded = storage.download(remote, &job.scratch, u64::MAX) => downloaded
                    .map_err(|e| failed(format!("the input could not be read: {e}")))?,
                () = running.until_stopped() => return Ok(None),
            };
            (
                downloaded.file.path().to_owned(),
                downloaded.size,
                Some(downloaded),
            )
        }
    };
    // The reader streams the file into requests; at most the requests in flight (and as
    // many waiting) are in memory.
    let concurrency = job.settings.max_concurrent_transforms;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Packed, String>>(concurrency);
    let (settings, gzip) = (job.settings, job.gzip);
    let processing = job.processing.clone();
    let read = running.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let counted = |n: usize| {
            read.progress.bytes.fetch_add(n as u64, Ordering::Relaxed);
        };
        read_requests(&path, &settings, processing.as_ref(), gzip, &counted, &tx)
    });
    let requests = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    use futures::StreamExt;
    let mut answers = requests
        .map(|packed| async move {
            let mut packed = packed?;
            let records = packed.records;
            let originals = std::mem::take(&mut packed.originals);
            let body = bytes::Bytes::from(std::mem::take(&mut packed.body));
            // Every model the same request, at once.
            let answers = futures::future::try_join_all(
                job.models
                    .iter()
                    .map(|m| invoke(job, m, body.clone(), records)),
            )
            .await?;
            // Each compared model's answer against the job's model's, as the type it says.
            let (first, first_type) = &answers[0];
            let compared: Vec<policy::Agreement> = answers[1..]
                .iter()
                .map(|(other, _)| policy::compare_outputs(first, other, first_type, records))
                .collect();
            // Cut into its records' outputs, joined and filtered.
            let bodies = answers
                .into_iter()
                .zip(&job.models)
                .map(|((body, media), model)| match &job.processing {
                    Some(dp) => dp
                        .finish(&originals, records, body, &media)
                        .map_err(|e| format!("model {}: {e}", model.name)),
                    None => Ok(body),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok::<_, String>((bodies, compared, records as u64))
        })
        .buffered(concurrency);
    let mut staged = Vec::with_capacity(job.models.len());
    let mut outs = Vec::with_capacity(job.models.len());
    for model in &job.models {
        // A local output is staged beside its place (renamed into it at the end; a stop
        // leaves a `.partial-` file that the next start removes); any other in scratch.
        let dir = match model.output.join(&policy::output_name(&input.name)) {
            Location::Local(path) => {
                let dir = path
                    .parent()
                    .unwrap_or(std::path::Path::new("/"))
                    .to_owned();
                tokio::task::spawn_blocking({
                    let dir = dir.clone();
                    move || create_dirs_synced(&dir)
                })
                .await
                .map_err(|e| failed(e.to_string()))?
                .map_err(|e| failed(format!("cannot create {}: {e}", dir.display())))?;
                dir
            }
            Location::S3 { .. } => job.scratch.clone(),
        };
        let file = tempfile::Builder::new()
            .prefix(".partial-")
            .tempfile_in(&dir)
            .map_err(|e| failed(e.to_string()))?;
        outs.push(std::io::BufWriter::with_capacity(
            1 << 20,
            file.reopen().map_err(|e| failed(e.to_string()))?,
        ));
        staged.push(file);
    }
    let mut records = 0u64;
    let mut agreements = vec![policy::Agreement::default(); job.models.len() - 1];
    let mut assembled = Vec::new();
    loop {
        // A stop does not wait for the requests in flight.
        let answer = tokio::select! {
            answer = answers.next() => answer,
            () = running.until_stopped() => return Ok(None),
        };
        let Some(answer) = answer else { break };
        let (bodies, compared, n) = answer.map_err(failed)?;
        records += n;
        running.progress.records.fetch_add(n, Ordering::Relaxed);
        running.progress.add_compared(&compared);
        for (total, a) in agreements.iter_mut().zip(&compared) {
            total.add(*a);
        }
        for (out, body) in outs.iter_mut().zip(&bodies) {
            assembled.clear();
            policy::assemble(&mut assembled, body, job.settings.assemble);
            std::io::Write::write_all(out, &assembled).map_err(|e| failed(e.to_string()))?;
        }
    }
    drop(answers);
    reader
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(failed)?;
    for out in outs {
        out.into_inner().map_err(|e| failed(e.to_string()))?;
    }
    if running.stopped() {
        return Ok(None);
    }
    for (model, staged) in job.models.iter().zip(staged) {
        if !put_output(job, model, input, staged, running).await? {
            return Ok(None);
        }
    }
    tracing::debug!(transform_job = %job.name, input = %input.name, records, "transform input completed");
    Ok(Some((records, bytes, agreements)))
}

/// Write `staged`, `model`'s output for `input`, to its place; `false` when the job was
/// asked to stop first.
async fn put_output(
    job: &Job,
    model: &ModelRun,
    input: &Input,
    staged: tempfile::NamedTempFile,
    running: &Running,
) -> Result<bool, String> {
    let failed = |e: String| format!("{}: {e}", input.location);
    let storage = &job.storage;
    let target = model.output.join(&policy::output_name(&input.name));
    // A local output on the scratch file's file system is renamed into place; any other
    // is uploaded (one upload, or a copy renamed into place).
    let staged = match &target {
        Location::Local(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || put_in_place(staged, &path))
                .await
                .map_err(|e| failed(e.to_string()))?
                .map_err(|e| failed(format!("the output could not be written to {target}: {e}")))?
        }
        Location::S3 { .. } => Some(staged),
    };
    if let Some(staged) = staged {
        let upload = tokio::time::timeout(TRANSFER_TIMEOUT, storage.upload(staged.path(), &target));
        tokio::select! {
            uploaded = upload => uploaded
                .map_err(|_| failed(format!("the output could not be written to {target} within 15 minutes")))?
                .map_err(|e| failed(format!("the output could not be written to {target}: {e}")))?,
            () = running.until_stopped() => return Ok(false),
        };
    }
    Ok(true)
}

/// Create `dir` and the directories above it that do not exist, each one's name synced in
/// its parent, so that a file put there and recorded survives a power failure.
fn create_dirs_synced(dir: &std::path::Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        missing.push(d.to_owned());
        at = d.parent();
    }
    if missing.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        if let Some(parent) = created.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
    }
    Ok(())
}

/// Put the staged output `staged` at `path` by a rename, once its data is synced, and sync
/// the name; the staged file back when `path` is on another file system (to be copied).
fn put_in_place(
    staged: tempfile::NamedTempFile,
    path: &std::path::Path,
) -> std::io::Result<Option<tempfile::NamedTempFile>> {
    staged.as_file().sync_all()?;
    let dir = path.parent().unwrap_or(std::path::Path::new("/"));
    create_dirs_synced(dir)?;
    match staged.persist(path) {
        Ok(_) => {
            std::fs::File::open(dir)?.sync_all()?;
            Ok(None)
        }
        Err(e) if e.error.kind() == std::io::ErrorKind::CrossesDevices => Ok(Some(e.file)),
        Err(e) => Err(e.error),
    }
}

/// Read the input at `path` (gunzipped when `gzip`), split and packed as `settings`
/// say, each request sent on `tx` in order; an error is sent too, and returned.
fn read_requests(
    path: &std::path::Path,
    settings: &Settings,
    processing: Option<&DataProcessing>,
    gzip: bool,
    counted: &dyn Fn(usize),
    tx: &tokio::sync::mpsc::Sender<Result<Packed, String>>,
) -> Result<(), String> {
    let result = (|| -> Result<(), String> {
        let file = Counted {
            inner: std::fs::File::open(path).map_err(|e| e.to_string())?,
            counted,
        };
        let raw: Box<dyn Read + '_> = if gzip {
            Box::new(flate2::read::MultiGzDecoder::new(file))
        } else {
            Box::new(file)
        };
        let mut reader = std::io::BufReader::with_capacity(1 << 20, raw);
        let mut packer = Packer::new(settings);
        let send = |packed: Packed| tx.blocking_send(Ok(packed)).is_ok();
        // The record filtered (`InputFilter`), and as read when it is to be joined.
        let mut push = |record: &[u8]| -> Result<Option<Packed>, String> {
            match processing {
                None => packer.push(record, None),
                Some(dp) => {
                    let filtered = dp.filter_input(record)?;
                    packer.push(&filtered, dp.joins().then_some(record))
                }
            }
            .map_err(|e| e.0)
        };
        let unzip = |e: std::io::Error| {
            if gzip {
                format!("the input is not gzip data (CompressionType Gzip): {e}")
            } else {
                e.to_string()
            }
        };
        match settings.split {
            Split::None => {
                let mut whole = Vec::new();
                let limit = settings.max_payload_bytes as u64 + 1;
                reader.take(limit).read_to_end(&mut whole).map_err(unzip)?;
                if let Some(packed) = push(&whole)? {
                    if !send(packed) {
                        return Ok(());
                    }
                }
            }
            Split::Line => {
                let mut line = Vec::new();
                loop {
                    line.clear();
                    // A line longer than a request may be is not read whole.
                    let limit = settings.max_payload_bytes as u64 + 2;
                    let n = (&mut reader)
                        .take(limit)
                        .read_until(b'\n', &mut line)
                        .map_err(unzip)?;
                    if n == 0 {
                        break;
                    }
                    if n as u64 == limit && !line.ends_with(b"\n") {
                        // Longer than a request may be: not cut into pieces a filter
                        // might make records of.
                        return Err(format!(
                            "{}: a record is larger than MaxPayloadInMB ({} MB)",
                            policy::TOO_LARGE,
                            settings.max_payload_bytes >> 20
                        ));
                    }
                    for record in policy::lines(&line) {
                        if let Some(packed) = push(record)? {
                            if !send(packed) {
                                return Ok(());
                            }
                        }
                    }
                }
            }
        }
        if let Some(packed) = packer.take() {
            send(packed);
        }
        Ok(())
    })();
    if let Err(e) = &result {
        let _ = tx.blocking_send(Err(e.clone()));
    }
    result
}

/// A reader that tells `counted` how many bytes it read.
struct Counted<'a, R> {
    inner: R,
    counted: &'a dyn Fn(usize),
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.counted)(n);
        Ok(n)
    }
}

/// Send one request to the job's instances: tried again on failure up to
/// `InvocationsMaxRetries` times, each try within `InvocationsTimeoutInSeconds`; a
/// throttled try waits and does not count.
async fn invoke(
    job: &Job,
    model: &ModelRun,
    body: bytes::Bytes,
    records: usize,
) -> Result<(Vec<u8>, String), String> {
    let timeout = Duration::from_secs(job.settings.timeout_seconds);
    let mut tries = 0;
    let mut wait = Duration::from_millis(10);
    loop {
        let request = Arc::new(Invocation {
            body: body.clone(),
            content_type: job.content_type.clone(),
            accept: job.accept.clone(),
            inference_id: uuid::Uuid::new_v4().to_string(),
            deadline: None,
            custom_attributes: None,
        });
        let held = model
            .variant
            .serving
            .hold(None, None, &model.variant.name, &model.variant.model_name)
            .await
            .map_err(|e| e.message().to_string())?;
        let _slot = model
            .slots
            .acquire()
            .await
            .map_err(|_| "the job's instances are gone".to_string())?;
        let why = match tokio::time::timeout(timeout, held.invoke(request)).await {
            Ok(Ok(output)) => return Ok((output.body, output.content_type)),
            Ok(Err(InvokeError::Throttled { .. })) => {
                if job.running.stopped() {
                    return Err("the job was asked to stop".into());
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(500));
                continue;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!(
                "the request timed out after InvocationsTimeoutInSeconds ({} s)",
                timeout.as_secs()
            ),
        };
        tries += 1;
        if tries > job.settings.max_retries {
            return Err(format!(
                "a request of {records} records to model {} failed after {tries} tries: {why}",
                model.name
            ));
        }
    }
}
