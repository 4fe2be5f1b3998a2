//! Batch transform's runner: a transform job (stored by CreateTransformJob, `InProgress`)
//! runs in its own task. Its model gets `TransformResources.InstanceCount` instances of its
//! own (a pool built as an endpoint's variant would be, counted against the server's
//! instance limit, with no endpoint). Every object under the input prefix (or named by the
//! manifest) is read through the storage layer into a scratch file, split into records and
//! packed into requests (`plinth_policy::batch_transform`) by a blocking reader that streams
//! the file, so that only the requests in flight are in memory; the requests go to the
//! instances, `MaxConcurrentTransforms` per instance, each with the job's invocation timeout
//! and retries; the responses are assembled in order into a scratch output that is written
//! whole to `<S3OutputPath>/<input>.out` (one upload, or a rename) only once every record of
//! the input succeeded. Each completed input is recorded in the store, so that a job a stop
//! interrupted resumes at start from the inputs not yet complete. StopTransformJob sets a
//! flag the runner reads between requests: the job is `Stopped` within one request's time,
//! its completed outputs left in place.

use super::deployer::Fleet;
use plinth_policy::batch_transform::{self as policy, Packed, Packer, Settings, Split};
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
    instances: AtomicU64,
    pub(crate) progress: Progress,
}

/// What a job has done, live.
#[derive(Default)]
pub(crate) struct Progress {
    inputs: AtomicU64,
    inputs_completed: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
}

impl Progress {
    /// As `DescribeTransformJob` reports it (`PlinthProgress`), and as the store keeps it.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "Inputs": self.inputs.load(Ordering::Relaxed),
            "InputsCompleted": self.inputs_completed.load(Ordering::Relaxed),
            "RecordsCompleted": self.records.load(Ordering::Relaxed),
            "BytesCompleted": self.bytes.load(Ordering::Relaxed),
        })
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
                true
            }
            None => false,
        }
    }
}

/// Start running job `name` (stored `InProgress`).
pub(crate) fn start(state: &Arc<Fleet>, name: &str) {
    let running = Arc::new(Running::default());
    state
        .transform_jobs
        .lock()
        .insert(name.to_owned(), running.clone());
    let (state, name) = (state.clone(), name.to_owned());
    tokio::spawn(async move {
        let outcome = transform(&state, &name, &running).await;
        let store = &state.stored.store;
        let now = crate::state::now();
        let stopped = running.stop.load(Ordering::Acquire);
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
    for job in jobs {
        match job.status.as_str() {
            "InProgress" => {
                tracing::info!(transform_job = %job.name, "a transform job a stop interrupted goes on");
                start(state, &job.name);
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

/// One input object: its name relative to the input prefix, and where it is.
struct Input {
    name: String,
    location: Location,
}

/// What one input's run shares with the others.
struct Job {
    name: String,
    settings: Settings,
    content_type: String,
    accept: String,
    gzip: bool,
    output: Location,
    variant: Arc<super::variant::LiveVariant>,
    storage: Arc<plinth_storage::Storage>,
    scratch: std::path::PathBuf,
}

/// Run job `name` to its end: `Ok` once every input is complete (or the job was asked to
/// stop), the failure reason otherwise.
async fn transform(state: &Arc<Fleet>, name: &str, running: &Running) -> Result<(), String> {
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
    let scratch = state.stored.artifacts.join("transform").join(name);
    // What a stop left staged is not needed: its inputs run again.
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)
        .map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
    let inputs = inputs(state, source["S3DataType"].as_str(), uri, &scratch).await?;
    let output = location(
        state,
        "TransformOutput.S3OutputPath",
        d["TransformOutput"]["S3OutputPath"]
            .as_str()
            .unwrap_or_default(),
    )?;
    // The job's own instances, within the server's limit.
    {
        let _changes = state.changes.lock().await;
        let held = super::assemble::instances_held(state, None);
        if held + settings.instances > state.max_instances {
            return Err(format!(
                "The job's {} instances would bring the server's total to {}, above its limit \
                 of {} instances.",
                settings.instances,
                held + settings.instances,
                state.max_instances
            ));
        }
        running
            .instances
            .store(settings.instances as u64, Ordering::Relaxed);
    }
    let model = d["ModelName"].as_str().unwrap_or_default();
    let label = format!("transform-job/{name}");
    let unresolved = state
        .catalog()
        .unresolved_model(&label, model, settings.instances)?;
    let built = super::assemble::build(state, &label, unresolved, &[], &[]).await?;
    let variant = built
        .variants
        .into_iter()
        .next()
        .map(|v| v.live)
        .ok_or("the model's instances could not be built")?;
    let done = state
        .stored
        .store
        .transform_inputs_done(name)
        .map_err(|e| e.to_string())?;
    let p = &running.progress;
    p.inputs.store(inputs.len() as u64, Ordering::Relaxed);
    for (records, bytes) in done.values() {
        p.inputs_completed.fetch_add(1, Ordering::Relaxed);
        p.records.fetch_add(*records, Ordering::Relaxed);
        p.bytes.fetch_add(*bytes, Ordering::Relaxed);
    }
    let job = Arc::new(Job {
        name: name.to_owned(),
        settings,
        content_type: d["TransformInput"]["ContentType"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        accept: d["TransformOutput"]["Accept"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        gzip: d["TransformInput"]["CompressionType"] == "Gzip",
        output,
        variant,
        storage: state.stored.remote.storage().clone(),
        scratch: scratch.clone(),
    });
    let pending: Vec<Input> = inputs
        .into_iter()
        .filter(|i| !done.contains_key(&i.name))
        .collect();
    // One input per instance at a time, each with its instance's concurrent requests.
    use futures::StreamExt;
    let mut runs = futures::stream::iter(pending)
        .map(|input| {
            let job = job.clone();
            async move {
                let result = transform_input(&job, &input, running).await;
                (input, result)
            }
        })
        .buffer_unordered(job.settings.instances);
    while let Some((input, result)) = runs.next().await {
        match result {
            Ok(Some((records, bytes))) => {
                p.inputs_completed.fetch_add(1, Ordering::Relaxed);
                p.records.fetch_add(records, Ordering::Relaxed);
                p.bytes.fetch_add(bytes, Ordering::Relaxed);
                state
                    .stored
                    .store
                    .transform_input_done(name, &input.name, records, bytes, &p.to_json())
                    .map_err(|e| format!("the progress could not be recorded: {e}"))?;
            }
            // Stopped.
            Ok(None) => {}
            Err(e) => {
                // The other inputs' runs end here (dropped), none of their outputs written.
                drop(runs);
                let _ = std::fs::remove_dir_all(&scratch);
                return Err(e);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
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
                .map(|name| Input {
                    location: prefix.join(&name),
                    name,
                })
                .collect()
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
                name: o.key,
            })
            .collect(),
    };
    let inputs: Vec<Input> = inputs;
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
    running: &Running,
) -> Result<Option<(u64, u64)>, String> {
    if running.stop.load(Ordering::Acquire) {
        return Ok(None);
    }
    let failed = |e: String| format!("{}: {e}", input.location);
    let storage = &job.storage;
    let downloaded = storage
        .download(&input.location, &job.scratch, u64::MAX)
        .await
        .map_err(|e| failed(format!("the input could not be read: {e}")))?;
    let bytes = downloaded.size;
    // The reader streams the file into requests; at most the requests in flight (and as
    // many waiting) are in memory.
    let concurrency = job.settings.max_concurrent_transforms;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Packed, String>>(concurrency);
    let (path, settings, gzip) = (downloaded.file.path().to_owned(), job.settings, job.gzip);
    let reader = tokio::task::spawn_blocking(move || read_requests(&path, &settings, gzip, &tx));
    let requests = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    use futures::StreamExt;
    let mut answers = requests
        .map(|packed| async move {
            let packed = packed?;
            let records = packed.records as u64;
            invoke(job, packed).await.map(|body| (body, records))
        })
        .buffered(concurrency);
    let staged = tempfile::Builder::new()
        .prefix(".out-")
        .tempfile_in(&job.scratch)
        .map_err(|e| failed(e.to_string()))?;
    let mut out = std::io::BufWriter::with_capacity(
        1 << 20,
        staged.reopen().map_err(|e| failed(e.to_string()))?,
    );
    let mut records = 0u64;
    let mut assembled = Vec::new();
    while let Some(answer) = answers.next().await {
        if running.stop.load(Ordering::Acquire) {
            return Ok(None);
        }
        let (body, n) = answer.map_err(failed)?;
        records += n;
        assembled.clear();
        policy::assemble(&mut assembled, &body, job.settings.assemble);
        std::io::Write::write_all(&mut out, &assembled).map_err(|e| failed(e.to_string()))?;
    }
    drop(answers);
    reader
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(failed)?;
    std::io::Write::flush(&mut out).map_err(|e| failed(e.to_string()))?;
    drop(out);
    if running.stop.load(Ordering::Acquire) {
        return Ok(None);
    }
    let target = job.output.join(&policy::output_name(&input.name));
    storage
        .upload(staged.path(), &target)
        .await
        .map_err(|e| failed(format!("the output could not be written to {target}: {e}")))?;
    tracing::debug!(transform_job = %job.name, input = %input.name, records, "transform input completed");
    Ok(Some((records, bytes)))
}

/// Read the staged input at `path` (gunzipped when `gzip`), split and packed as `settings`
/// say, each request sent on `tx` in order; an error is sent too, and returned.
fn read_requests(
    path: &std::path::Path,
    settings: &Settings,
    gzip: bool,
    tx: &tokio::sync::mpsc::Sender<Result<Packed, String>>,
) -> Result<(), String> {
    let result = (|| -> Result<(), String> {
        let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
        let raw: Box<dyn Read> = if gzip {
            Box::new(flate2::read::MultiGzDecoder::new(file))
        } else {
            Box::new(file)
        };
        let mut reader = std::io::BufReader::with_capacity(1 << 20, raw);
        let mut packer = Packer::new(settings);
        let send = |packed: Packed| tx.blocking_send(Ok(packed)).is_ok();
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
                if let Some(packed) = packer.push(&whole).map_err(|e| e.0)? {
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
                    for record in policy::lines(&line) {
                        if let Some(packed) = packer.push(record).map_err(|e| e.0)? {
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

/// Send one request to the job's instances: tried again on failure up to
/// `InvocationsMaxRetries` times, each try within `InvocationsTimeoutInSeconds`; a
/// throttled try waits and does not count.
async fn invoke(job: &Job, packed: Packed) -> Result<Vec<u8>, String> {
    let body = bytes::Bytes::from(packed.body);
    let timeout = Duration::from_secs(job.settings.timeout_seconds);
    let mut tries = 0;
    loop {
        let request = Arc::new(Invocation {
            body: body.clone(),
            content_type: job.content_type.clone(),
            accept: job.accept.clone(),
            inference_id: uuid::Uuid::new_v4().to_string(),
            custom_attributes: None,
        });
        let held = job
            .variant
            .serving
            .hold(None, &job.variant.name)
            .await
            .map_err(|e| e.message().to_string())?;
        let why = match tokio::time::timeout(timeout, held.invoke(request)).await {
            Ok(Ok(output)) => return Ok(output.body),
            Ok(Err(InvokeError::Throttled { .. })) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
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
                "a request of {} records failed after {tries} tries: {why}",
                packed.records
            ));
        }
    }
}
