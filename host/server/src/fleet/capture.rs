//! Data capture (`DataCaptureConfig`): the sampled invocations of an endpoint config's
//! variants, handed without waiting to one writer task that writes them as SageMaker's JSON
//! Lines files through the storage layer, under
//! `<destination>/<endpoint>/<variant>/yyyy/mm/dd/hh/`.
//!
//! The writer keeps each variant's current file in memory and puts it whole when it rolls
//! (`plinth_policy::data_capture::roll`: 16 MiB, the roll period, or the hour's end), so a
//! reader never sees part of a file. The queue, the open files and the files being written
//! share one byte budget ([`BUFFER_BYTES`]): a capture that finds it spent is dropped and
//! counted (`plinth_data_capture_dropped_total`, reason `queue_full`), never waited for; a
//! file the destination refuses (after the storage layer's retries) is counted as dropped
//! with reason `write_failed`. A slow or failing destination therefore costs captures, never
//! a request's time. A crash loses what was not yet written: each variant's open file (at
//! most one roll period of records) and the queue (at most the budget).

use crate::metrics::Metrics;
use bytes::Bytes;
use plinth_policy::data_capture::{self as policy, Settings};
use prometheus::IntCounterVec;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// The bytes the queue, the open files and the files being written may hold together.
pub(crate) const BUFFER_BYTES: usize = 64 << 20;
/// Captures the queue holds at most, whatever their size.
const QUEUE: usize = 16_384;
/// What a capture costs in the budget besides its bodies (its record's metadata).
const OVERHEAD: usize = 512;
/// Files written at once.
const WRITES: usize = 4;
/// How often the writer takes what the queue holds.
const DRAIN_EVERY: Duration = Duration::from_millis(20);
/// How long writing one file may take before its records are counted as dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(120);

/// The capture queue every endpoint shares, and its writer's input.
pub(crate) struct Captures {
    shared: Arc<Shared>,
    receiver: Mutex<Option<mpsc::Receiver<Message>>>,
}

struct Shared {
    sender: mpsc::Sender<Message>,
    /// Bytes held now (queued, in open files, being written).
    held: AtomicUsize,
    budget: usize,
    dropped: IntCounterVec,
    written: IntCounterVec,
}

enum Message {
    Captured(Box<Captured>),
    /// Write every open file now; answer once all are written.
    Flush(oneshot::Sender<()>),
}

/// One sampled invocation on its way to a file.
struct Captured {
    endpoint: Arc<str>,
    config: Arc<str>,
    variant: String,
    settings: Arc<Settings>,
    input: Option<(String, Bytes)>,
    output: Option<(String, Bytes)>,
    inference_id: Option<String>,
    time_ms: i64,
    cost: usize,
}

impl Captures {
    /// A queue within `budget` bytes, counted in `metrics`.
    pub(crate) fn new(metrics: &Metrics, budget: usize) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        Self {
            shared: Arc::new(Shared {
                sender,
                held: AtomicUsize::new(0),
                budget,
                dropped: metrics.data_capture_dropped.clone(),
                written: metrics.data_capture_records.clone(),
            }),
            receiver: Mutex::new(Some(receiver)),
        }
    }

    /// The capture of the fleet of endpoint config `config` on `endpoint`.
    pub(crate) fn capture(&self, endpoint: &str, config: &str, settings: Settings) -> Arc<Capture> {
        Arc::new(Capture {
            endpoint: endpoint.into(),
            config: config.into(),
            settings: Arc::new(settings),
            shared: self.shared.clone(),
        })
    }

    /// Write every open file now and wait until they are written (at shutdown, within
    /// `within`). False if the writer is not running or the time ran out.
    pub(crate) async fn flush(&self, within: Duration) -> bool {
        let flushed = async {
            let (done, wait) = oneshot::channel();
            self.shared.sender.send(Message::Flush(done)).await.ok()?;
            wait.await.ok()
        };
        matches!(tokio::time::timeout(within, flushed).await, Ok(Some(())))
    }

    /// The writer: run once per fleet, for as long as it lives. `roll_after`: how long a
    /// file stays open.
    pub(crate) async fn run(&self, storage: Arc<plinth_storage::Storage>, roll_after: Duration) {
        let Some(receiver) = self
            .receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        Writer {
            shared: self.shared.clone(),
            storage,
            roll_after,
            open: HashMap::new(),
            writes: tokio::task::JoinSet::new(),
            permits: Arc::new(tokio::sync::Semaphore::new(WRITES)),
        }
        .run(receiver)
        .await;
    }
}

/// The data capture of the fleet of one endpoint config.
pub(crate) struct Capture {
    endpoint: Arc<str>,
    /// The endpoint config whose fleet it captures (its files' names end with it).
    config: Arc<str>,
    settings: Arc<Settings>,
    shared: Arc<Shared>,
}

impl Capture {
    /// Offer an invocation `variant` served: captured if sampled and within the budget.
    /// Never waits. `inference_id`: the one the client gave, if it gave one; `arrived`: when
    /// the request arrived (the record's `inferenceTime`).
    pub(crate) fn offer(
        &self,
        variant: &str,
        request: &plinth_runtime::Invocation,
        inference_id: Option<&str>,
        output_content_type: &str,
        output: &Bytes,
        arrived: std::time::Instant,
    ) {
        let settings = &self.settings;
        if !policy::sampled(settings, rand::random::<f64>()) {
            return;
        }
        let input = settings
            .input
            .then(|| (request.content_type.clone(), request.body.clone()));
        let output = settings
            .output
            .then(|| (output_content_type.to_owned(), output.clone()));
        let cost = OVERHEAD
            + input.as_ref().map_or(0, |(_, b)| b.len())
            + output.as_ref().map_or(0, |(_, b)| b.len());
        let shared = &self.shared;
        let reserved = shared
            .held
            .fetch_update(Relaxed, Relaxed, |held| {
                (held + cost <= shared.budget).then_some(held + cost)
            })
            .is_ok();
        let captured = Captured {
            endpoint: self.endpoint.clone(),
            config: self.config.clone(),
            variant: variant.to_owned(),
            settings: settings.clone(),
            input,
            output,
            inference_id: inference_id.map(str::to_owned),
            time_ms: now_ms() - arrived.elapsed().as_millis() as i64,
            cost,
        };
        if !reserved {
            shared.drop_records(&self.endpoint, variant, "queue_full", 1);
            return;
        }
        if shared
            .sender
            .try_send(Message::Captured(Box::new(captured)))
            .is_err()
        {
            shared.held.fetch_sub(cost, Relaxed);
            shared.drop_records(&self.endpoint, variant, "queue_full", 1);
        }
    }
}

impl Shared {
    fn drop_records(&self, endpoint: &str, variant: &str, reason: &str, n: u64) {
        self.dropped
            .with_label_values(&[endpoint, variant, reason])
            .inc_by(n);
    }
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Where a file goes: one per endpoint, config, variant and destination.
#[derive(Clone, PartialEq, Eq, Hash)]
struct FileKey {
    endpoint: Arc<str>,
    config: Arc<str>,
    variant: String,
    destination: String,
}

/// A file being filled.
struct OpenFile {
    /// Its first record's time: the file's place and name.
    time_ms: i64,
    opened: Instant,
    lines: Vec<u8>,
    records: u64,
    /// Its records' cost in the budget.
    held: usize,
}

struct Writer {
    shared: Arc<Shared>,
    storage: Arc<plinth_storage::Storage>,
    roll_after: Duration,
    open: HashMap<FileKey, OpenFile>,
    writes: tokio::task::JoinSet<()>,
    permits: Arc<tokio::sync::Semaphore>,
}

impl Writer {
    /// Drain the queue every [`DRAIN_EVERY`] rather than wait on it: a writer waiting on
    /// the queue would be woken (across threads) by every request captured.
    async fn run(mut self, mut receiver: mpsc::Receiver<Message>) {
        let mut drain = tokio::time::interval(DRAIN_EVERY);
        drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_roll_check = Instant::now();
        loop {
            tokio::select! {
                _ = drain.tick() => {
                    loop {
                        match receiver.try_recv() {
                            Ok(Message::Captured(c)) => self.append(*c),
                            Ok(Message::Flush(done)) => {
                                let all: Vec<FileKey> = self.open.keys().cloned().collect();
                                for key in all {
                                    self.write(key);
                                }
                                while self.writes.join_next().await.is_some() {}
                                let _ = done.send(());
                            }
                            Err(mpsc::error::TryRecvError::Empty) => break,
                            Err(mpsc::error::TryRecvError::Disconnected) => return,
                        }
                    }
                    if last_roll_check.elapsed() >= self.roll_after.min(Duration::from_secs(1)) {
                        last_roll_check = Instant::now();
                        self.roll_due();
                    }
                }
                Some(_) = self.writes.join_next(), if !self.writes.is_empty() => {}
            }
        }
    }

    /// Write the files whose roll is due.
    fn roll_due(&mut self) {
        let now = now_ms();
        let due: Vec<FileKey> = self
            .open
            .iter()
            .filter(|(_, f)| {
                policy::roll(
                    f.lines.len() as u64,
                    f.opened.elapsed(),
                    self.roll_after,
                    policy::same_hour(f.time_ms, now),
                )
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.write(key);
        }
    }

    /// Add a capture's record to its file, rolling the file first when it is due.
    fn append(&mut self, c: Captured) {
        let key = FileKey {
            endpoint: c.endpoint.clone(),
            config: c.config.clone(),
            variant: c.variant.clone(),
            destination: c.settings.destination.clone(),
        };
        if self.open.get(&key).is_some_and(|f| {
            policy::roll(
                f.lines.len() as u64,
                f.opened.elapsed(),
                self.roll_after,
                policy::same_hour(f.time_ms, c.time_ms),
            )
        }) {
            self.write(key.clone());
        }
        let file = self.open.entry(key).or_insert_with(|| OpenFile {
            time_ms: c.time_ms,
            opened: Instant::now(),
            lines: Vec::new(),
            records: 0,
            held: 0,
        });
        fn body(b: &Option<(String, Bytes)>) -> Option<policy::Body<'_>> {
            b.as_ref()
                .map(|(content_type, data)| policy::Body { content_type, data })
        }
        let event_id = uuid::Uuid::new_v4().to_string();
        let line = policy::record(
            &c.settings,
            &policy::Event {
                input: body(&c.input),
                output: body(&c.output),
                event_id: &event_id,
                inference_id: c.inference_id.as_deref(),
                time_ms: c.time_ms,
            },
        );
        file.lines.extend_from_slice(line.as_bytes());
        file.lines.push(b'\n');
        file.records += 1;
        // The record may be larger than its bodies (base64, escapes): charge the larger.
        let size = line.len() + 1;
        if size > c.cost {
            self.shared.held.fetch_add(size - c.cost, Relaxed);
        }
        file.held += size.max(c.cost);
        // Many open files together past half the budget: write the largest now, so that
        // open files alone never spend it.
        if self.shared.held.load(Relaxed) > self.shared.budget / 2 {
            let largest = self
                .open
                .iter()
                .max_by_key(|(_, f)| f.held)
                .map(|(k, _)| k.clone());
            if let Some(key) = largest {
                self.write(key);
            }
        }
    }

    /// Close the file of `key` and write it in a task of its own (at most [`WRITES`] at
    /// once); its bytes leave the budget once it is written or has failed.
    fn write(&mut self, key: FileKey) {
        let Some(file) = self.open.remove(&key) else {
            return;
        };
        let object = policy::object_key(
            &key.destination,
            &key.endpoint,
            &key.variant,
            file.time_ms,
            &uuid::Uuid::new_v4().to_string(),
            &key.config,
        );
        let storage = self.storage.clone();
        let shared = self.shared.clone();
        let permits = self.permits.clone();
        // The file's bytes leave the budget when this task ends, however it ends.
        let release = Release {
            shared: shared.clone(),
            bytes: file.held,
        };
        self.writes.spawn(async move {
            let _release = release;
            let _permit = permits.acquire_owned().await;
            let written = match plinth_storage::Location::parse(&object) {
                Ok(location) => {
                    let put = storage.put(Bytes::from(file.lines), &location);
                    match tokio::time::timeout(WRITE_TIMEOUT, put).await {
                        Ok(written) => written.map_err(|e| e.to_string()),
                        Err(_) => Err(format!(
                            "{object}: not written within {} s",
                            WRITE_TIMEOUT.as_secs()
                        )),
                    }
                }
                Err(e) => Err(e),
            };
            match written {
                Ok(_) => shared
                    .written
                    .with_label_values(&[&*key.endpoint, &key.variant])
                    .inc_by(file.records),
                Err(error) => {
                    tracing::warn!(
                        endpoint = %key.endpoint,
                        variant = %key.variant,
                        %object,
                        records = file.records,
                        %error,
                        "a data capture file could not be written; its records are dropped"
                    );
                    shared.drop_records(&key.endpoint, &key.variant, "write_failed", file.records);
                }
            }
        });
    }
}

/// Gives a file's bytes back to the budget when dropped.
struct Release {
    shared: Arc<Shared>,
    bytes: usize,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.shared.held.fetch_sub(self.bytes, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(destination: &str, percentage: u8) -> Settings {
        policy::settings(&policy::Given {
            enable_capture: Some(true),
            initial_sampling_percentage: Some(i64::from(percentage)),
            destination: Some(destination),
            capture_modes: vec!["Input", "Output"],
            csv_content_types: Some(vec!["text/csv"]),
            json_content_types: None,
        })
        .unwrap()
    }

    fn invocation(body: &'static [u8]) -> plinth_runtime::Invocation {
        plinth_runtime::Invocation {
            body: Bytes::from_static(body),
            content_type: "text/csv".into(),
            accept: String::new(),
            inference_id: "i".into(),
            deadline: None,
            custom_attributes: None,
        }
    }

    fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else {
                    found.push(e.path());
                }
            }
        }
        found
    }

    #[tokio::test]
    async fn captures_are_written_per_variant_and_the_budget_drops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        // Room for two captures of this size (OVERHEAD + 5 + 1 bytes each), not three.
        let captures = Arc::new(Captures::new(&metrics, 2 * (OVERHEAD + 6) + 1));
        let storage = Arc::new(plinth_storage::Storage::new(Default::default()));
        let writer = {
            let captures = captures.clone();
            tokio::spawn(async move { captures.run(storage, Duration::from_secs(3600)).await })
        };
        let capture = captures.capture("e", "c", settings(dir.path().to_str().unwrap(), 100));
        let output = Bytes::from_static(b"1");
        capture.offer(
            "A",
            &invocation(b"1,2,3"),
            Some("id-1"),
            "text/csv",
            &output,
            Instant::now(),
        );
        capture.offer(
            "B",
            &invocation(b"4,5,6"),
            None,
            "text/csv",
            &output,
            Instant::now(),
        );
        capture.offer(
            "B",
            &invocation(b"7,8,9"),
            None,
            "text/csv",
            &output,
            Instant::now(),
        );
        let dropped = |reason: &str| {
            metrics
                .data_capture_dropped
                .with_label_values(&["e", "B", reason])
                .get()
        };
        assert_eq!(dropped("queue_full"), 1);
        assert!(
            files(dir.path()).is_empty(),
            "nothing is written before a roll"
        );
        assert!(captures.flush(Duration::from_secs(10)).await);

        let mut written = files(dir.path());
        written.sort();
        assert_eq!(written.len(), 2, "{written:?}");
        for (path, variant, data, id) in [
            (&written[0], "A", "1,2,3", Some("id-1")),
            (&written[1], "B", "4,5,6", None),
        ] {
            let relative = path.strip_prefix(dir.path()).unwrap().to_str().unwrap();
            assert!(relative.starts_with(&format!("e/{variant}/")), "{relative}");
            assert!(relative.ends_with(".jsonl"));
            let text = std::fs::read_to_string(path).unwrap();
            assert_eq!(text.lines().count(), 1);
            let record: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
            assert_eq!(record["captureData"]["endpointInput"]["data"], data);
            assert_eq!(record["captureData"]["endpointInput"]["encoding"], "CSV");
            assert_eq!(record["captureData"]["endpointOutput"]["data"], "1");
            assert_eq!(
                record["eventMetadata"]["inferenceId"].as_str(),
                id,
                "{record}"
            );
        }
        assert_eq!(
            metrics
                .data_capture_records
                .with_label_values(&["e", "A"])
                .get(),
            1
        );
        // Written: the budget is free again.
        assert_eq!(captures.shared.held.load(Relaxed), 0);
        capture.offer(
            "B",
            &invocation(b"7,8,9"),
            None,
            "text/csv",
            &output,
            Instant::now(),
        );
        assert_eq!(dropped("queue_full"), 1);
        writer.abort();
    }

    #[tokio::test]
    async fn a_destination_that_fails_drops_its_file_s_records() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the destination's directory would be: every write fails.
        let blocked = dir.path().join("blocked");
        std::fs::write(&blocked, b"").unwrap();
        let metrics = Metrics::new();
        let captures = Arc::new(Captures::new(&metrics, BUFFER_BYTES));
        let storage = Arc::new(plinth_storage::Storage::new(Default::default()));
        let writer = {
            let captures = captures.clone();
            tokio::spawn(async move { captures.run(storage, Duration::from_secs(3600)).await })
        };
        let capture = captures.capture("e", "c", settings(blocked.to_str().unwrap(), 100));
        for _ in 0..3 {
            capture.offer(
                "A",
                &invocation(b"1"),
                None,
                "text/csv",
                &Bytes::new(),
                Instant::now(),
            );
        }
        assert!(captures.flush(Duration::from_secs(10)).await);
        assert_eq!(
            metrics
                .data_capture_dropped
                .with_label_values(&["e", "A", "write_failed"])
                .get(),
            3
        );
        assert_eq!(captures.shared.held.load(Relaxed), 0);
        writer.abort();
    }
}
