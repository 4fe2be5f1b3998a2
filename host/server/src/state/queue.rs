//! The asynchronous queue's state: the jobs InvokeEndpointAsync accepted that are not done
//! yet, the notifications of the jobs that are, and counts of how jobs ended, kept in
//! memory and made durable in an append-only log (`async-queue.log` in the data directory).
//!
//! Every change is a record appended to the log: a job accepted (with its request), a start
//! counted, a start uncounted, a job's end (with its notification), a delivery's try. One
//! writer appends them in batches (`state::group_commit`) and syncs the file before any write
//! of the batch is answered or takes effect in memory. Claiming a job to run it is not
//! written: reading the log back at start, every job not ended is queued again, its starts
//! still counted, and those whose last start was not followed by an end are the ones a stop
//! interrupted. A record cut short by a crash ends the log (it was never answered), and is
//! cut off.
//!
//! A job's output or failure object, when it is a small local file, is kept in its end's
//! record: the log's sync makes it durable with the end, and the file (staged beside its
//! place) is renamed into place unsynced, so that a batch of ends costs one sync to disk.
//! About once a second the file systems of the objects renamed since are synced and a
//! checkpoint is recorded; reading the log back, the objects of the ends after the last
//! checkpoint are checked against their records and written again where a crash lost them. When the log has grown well beyond what is live, it is rewritten with only the
//! live records (a new file synced, then renamed over the old one), so its size follows the
//! backlog, not the traffic. Without a data directory the queue is kept in memory only.
//!
//! A record is its length and CRC-32 (little-endian `u32`s), then its JSON. A job's request
//! is kept in memory as the JSON text it was accepted with, and parsed when it is claimed.

use super::store::{Store, StoreError};
use plinth_policy::async_inference::{fate, Fate, Queued, INVOCATION_TIMEOUT_SECONDS, TTL_SECONDS};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// An asynchronous inference job, claimed to run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AsyncJob {
    pub(crate) seq: i64,
    pub(crate) endpoint: String,
    /// The id its output and failure objects are named by (the request's `InferenceId` is
    /// in `job`).
    pub(crate) id: String,
    /// When it was accepted (epoch seconds).
    pub(crate) accepted: f64,
    /// Times it was started before this claim.
    pub(crate) attempts: u32,
    /// The request: where its input is, where its output and failure go, its headers.
    pub(crate) job: Value,
}

/// A job's object kept in its end's record: its bytes, staged at `staged`, to be renamed
/// to `path` once the end is in the log.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Object {
    pub(crate) staged: PathBuf,
    pub(crate) path: PathBuf,
    pub(crate) bytes: bytes::Bytes,
}

/// Which writes' objects to put in place, and where the log ended with their ends.
#[derive(Debug, Default)]
pub(crate) struct Placing {
    upto: u64,
    objects: Vec<usize>,
}

/// The largest object kept in the log with its job's end; a larger one is synced in place
/// before the end is recorded (`state::group_commit`).
pub(crate) const LOGGED_OBJECT_BYTES: usize = 64 << 10;

/// How often the objects renamed into place since the last checkpoint are synced.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// One write to the asynchronous queue, appended with others in one batch
/// ([`Queue::write`], through `state::group_commit`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum QueueWrite {
    /// Queue a job (InvokeEndpointAsync), by the id its objects are named by.
    Insert {
        endpoint: String,
        id: String,
        accepted: f64,
        job: Value,
    },
    /// A claimed job is about to be invoked: its start is counted (a job that a stop
    /// interrupted this many times is not started again, `MAX_ATTEMPTS`).
    Start { seq: i64 },
    /// A claimed job goes back to the queue (the variant had no room, or its end could not
    /// be recorded), its start uncounted when `uncount` (nothing ran).
    Release { seq: i64, uncount: bool },
    /// A job is done: its output or failure object is written (or, when `object` is
    /// given, kept in the record and put in place once it is written); `outcome`'s
    /// `Status` says which. Its notification (a webhook URL and the message), if any, goes
    /// with it.
    Finish {
        seq: i64,
        outcome: Value,
        notification: Option<(String, Value)>,
        object: Option<Object>,
    },
    /// A try of job `seq`'s notification: its tries so far, what became of it, when it is
    /// due again (while pending) and the try's result (a status, or why none).
    Delivery {
        seq: i64,
        attempts: u32,
        state: DeliveryState,
        next_at: f64,
        last_try: String,
    },
}

/// A finished job's notification, due for a try.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Notification {
    /// Its job's sequence number.
    pub(crate) seq: i64,
    pub(crate) endpoint: String,
    pub(crate) url: String,
    /// The JSON message, as sent.
    pub(crate) message: String,
    /// Tries so far.
    pub(crate) attempts: u32,
}

/// Where a notification's delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum DeliveryState {
    /// Not delivered yet: tried again at its `next_at`.
    Pending,
    Delivered,
    /// Given up.
    Failed,
}

/// An endpoint's asynchronous queue at a glance (`plinth async status`).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct QueueStatus {
    pub(crate) queued: u64,
    pub(crate) running: u64,
    /// Jobs that ended in the last day, by outcome.
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    /// Notifications pending now; delivered and given up in the last day.
    pub(crate) notifications_pending: u64,
    pub(crate) notifications_delivered: u64,
    pub(crate) notifications_failed: u64,
    /// The latest notifications not (yet) delivered: URL, tries, the last try's result.
    pub(crate) undelivered: Vec<(String, u32, String)>,
}

/// A job the queue holds (waiting or running), as the log has it.
#[derive(Debug, Clone)]
struct Held {
    endpoint: String,
    id: String,
    accepted: f64,
    attempts: u32,
    /// Its last start was not followed by an end or a release: read back from the log,
    /// a stop interrupted it while it ran.
    started: bool,
    running: bool,
    ttl_seconds: u64,
    timeout_seconds: u64,
    /// The request, as JSON text.
    job: Box<RawValue>,
}

impl Held {
    fn queued(&self) -> Queued {
        Queued {
            accepted: self.accepted,
            ttl_seconds: self.ttl_seconds,
            timeout_seconds: self.timeout_seconds,
            attempts: self.attempts,
        }
    }

    /// About what its record takes in the log.
    fn size(&self) -> u64 {
        (self.job.get().len() + self.endpoint.len() + self.id.len() + 96) as u64
    }
}

/// A notification not delivered yet, or given up.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Notice {
    endpoint: String,
    url: String,
    message: Box<RawValue>,
    attempts: u32,
    state: DeliveryState,
    next_at: f64,
    last_try: Option<String>,
    /// When its job ended (epoch seconds).
    ended: f64,
}

/// How jobs and notifications ended, in one hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Tally {
    completed: u64,
    failed: u64,
    delivered: u64,
    gave_up: u64,
}

/// How long ends are counted (and notifications given up are listed): a day.
const KEEP_SECONDS: f64 = 86_400.0;

/// The notifications given up listed per endpoint.
const UNDELIVERED_LISTED: usize = 10;

/// One record of the log.
#[derive(Serialize, Deserialize)]
enum Record {
    /// A job accepted (or, in a rewritten log, still live with its starts so far).
    Job {
        seq: i64,
        endpoint: String,
        id: String,
        accepted: f64,
        #[serde(default)]
        attempts: u32,
        #[serde(default)]
        started: bool,
        job: Box<RawValue>,
    },
    Start {
        seq: i64,
    },
    Release {
        seq: i64,
        uncount: bool,
    },
    End {
        seq: i64,
        at: f64,
        completed: bool,
        notify: Option<(String, Box<RawValue>)>,
        /// Its object's path and bytes (base64), when kept here.
        #[serde(default)]
        object: Option<(String, String)>,
    },
    /// The objects kept in the ends before offset `upto` of the log are durable in place.
    Checkpoint {
        upto: u64,
    },
    Try {
        seq: i64,
        attempts: u32,
        state: DeliveryState,
        next_at: f64,
        last_try: String,
    },
    /// In a rewritten log: a notification not delivered yet, or given up.
    Notice {
        seq: i64,
        notice: Notice,
    },
    /// In a rewritten log: an endpoint's ends in one hour.
    Tally {
        endpoint: String,
        hour: i64,
        tally: Tally,
    },
    /// In a rewritten log: the next sequence number.
    Next {
        seq: i64,
    },
}

/// Per endpoint: its jobs waiting (by sequence number) and running.
#[derive(Default)]
struct Lane {
    queued: BTreeSet<i64>,
    running: BTreeSet<i64>,
}

/// The queue in memory.
#[derive(Default)]
struct Index {
    next_seq: i64,
    jobs: HashMap<i64, Held>,
    lanes: HashMap<String, Lane>,
    notices: BTreeMap<i64, Notice>,
    /// The pending notifications by when they are due: (`next_at`'s bits, seq).
    due: BTreeSet<(u64, i64)>,
    /// Per endpoint, per hour (epoch seconds / 3600), how jobs and notifications ended.
    tallies: HashMap<String, BTreeMap<i64, Tally>>,
    /// About what the live records take in the log.
    live_bytes: u64,
}

/// Bits ordering non-negative times as the times (a negative one as 0).
fn time_key(t: f64) -> u64 {
    t.max(0.0).to_bits()
}

impl Index {
    fn lane(&mut self, endpoint: &str) -> &mut Lane {
        if !self.lanes.contains_key(endpoint) {
            self.lanes.insert(endpoint.to_owned(), Lane::default());
        }
        self.lanes.get_mut(endpoint).expect("inserted")
    }

    fn tally(&mut self, endpoint: &str, at: f64) -> &mut Tally {
        let hour = (at / 3600.0).floor() as i64;
        if !self.tallies.contains_key(endpoint) {
            self.tallies.insert(endpoint.to_owned(), BTreeMap::new());
        }
        self.tallies
            .get_mut(endpoint)
            .expect("inserted")
            .entry(hour)
            .or_default()
    }

    /// Whether job `seq` is held (waiting or running).
    fn holds(&self, seq: i64) -> bool {
        self.jobs.contains_key(&seq)
    }

    /// Apply one record (read back, or just written).
    fn apply(&mut self, record: Record) {
        match record {
            Record::Job {
                seq,
                endpoint,
                id,
                accepted,
                attempts,
                started,
                job,
            } => {
                let (ttl_seconds, timeout_seconds) = limits(&job);
                let held = Held {
                    endpoint,
                    id,
                    accepted,
                    attempts,
                    started,
                    running: false,
                    ttl_seconds,
                    timeout_seconds,
                    job,
                };
                self.live_bytes += held.size();
                self.lane(&held.endpoint).queued.insert(seq);
                self.jobs.insert(seq, held);
                self.next_seq = self.next_seq.max(seq + 1);
            }
            Record::Start { seq } => {
                if let Some(held) = self.jobs.get_mut(&seq) {
                    held.attempts += 1;
                    held.started = true;
                }
            }
            Record::Release { seq, uncount } => {
                let Some(held) = self.jobs.get_mut(&seq) else {
                    return;
                };
                if uncount {
                    held.attempts = held.attempts.saturating_sub(1);
                }
                held.started = false;
                if held.running {
                    held.running = false;
                    let endpoint = held.endpoint.clone();
                    let lane = self.lane(&endpoint);
                    lane.running.remove(&seq);
                    lane.queued.insert(seq);
                }
            }
            Record::End {
                seq,
                at,
                completed,
                notify,
                ..
            } => {
                let Some(held) = self.jobs.remove(&seq) else {
                    return;
                };
                self.live_bytes = self.live_bytes.saturating_sub(held.size());
                let lane = self.lane(&held.endpoint);
                lane.queued.remove(&seq);
                lane.running.remove(&seq);
                let tally = self.tally(&held.endpoint, at);
                if completed {
                    tally.completed += 1;
                } else {
                    tally.failed += 1;
                }
                if let Some((url, message)) = notify {
                    self.put_notice(
                        seq,
                        Notice {
                            endpoint: held.endpoint,
                            url,
                            message,
                            attempts: 0,
                            state: DeliveryState::Pending,
                            next_at: 0.0,
                            last_try: None,
                            ended: at,
                        },
                    );
                }
            }
            Record::Try {
                seq,
                attempts,
                state,
                next_at,
                last_try,
            } => {
                let Some(mut notice) = self.take_notice(seq) else {
                    return;
                };
                notice.attempts = attempts;
                notice.state = state;
                notice.next_at = next_at;
                notice.last_try = Some(last_try);
                let now = notice.ended.max(next_at);
                match state {
                    DeliveryState::Pending => self.put_notice(seq, notice),
                    DeliveryState::Delivered => self.tally(&notice.endpoint, now).delivered += 1,
                    DeliveryState::Failed => {
                        self.tally(&notice.endpoint, notice.ended).gave_up += 1;
                        self.put_notice(seq, notice);
                        self.trim_undelivered();
                    }
                }
            }
            Record::Notice { seq, notice } => {
                self.next_seq = self.next_seq.max(seq + 1);
                self.put_notice(seq, notice);
            }
            Record::Tally {
                endpoint,
                hour,
                tally,
            } => {
                let t = self.tally(&endpoint, hour as f64 * 3600.0);
                *t = tally;
            }
            Record::Next { seq } => self.next_seq = self.next_seq.max(seq),
            Record::Checkpoint { .. } => {}
        }
    }

    fn put_notice(&mut self, seq: i64, notice: Notice) {
        if notice.state == DeliveryState::Pending {
            self.due.insert((time_key(notice.next_at), seq));
        }
        self.live_bytes += (notice.message.get().len() + notice.url.len() + 128) as u64;
        self.notices.insert(seq, notice);
    }

    fn take_notice(&mut self, seq: i64) -> Option<Notice> {
        let notice = self.notices.remove(&seq)?;
        self.due.remove(&(time_key(notice.next_at), seq));
        self.live_bytes = self
            .live_bytes
            .saturating_sub((notice.message.get().len() + notice.url.len() + 128) as u64);
        Some(notice)
    }

    /// Keep only the latest notifications given up per endpoint.
    fn trim_undelivered(&mut self) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut gone = Vec::new();
        for (seq, n) in self.notices.iter().rev() {
            if n.state == DeliveryState::Failed {
                let count = seen.entry(n.endpoint.as_str()).or_default();
                *count += 1;
                if *count > UNDELIVERED_LISTED {
                    gone.push(*seq);
                }
            }
        }
        for seq in gone {
            self.take_notice(seq);
        }
    }

    /// Forget the counts and notifications given up older than `before`.
    fn forget(&mut self, before: f64) {
        let hour = (before / 3600.0).floor() as i64;
        for hours in self.tallies.values_mut() {
            *hours = hours.split_off(&hour);
        }
        self.tallies.retain(|_, hours| !hours.is_empty());
        let old: Vec<i64> = self
            .notices
            .iter()
            .filter(|(_, n)| n.state == DeliveryState::Failed && n.ended < before)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in old {
            self.take_notice(seq);
        }
        self.lanes
            .retain(|_, lane| !lane.queued.is_empty() || !lane.running.is_empty());
    }

    /// Claim job `seq` if it waits: it becomes running.
    fn claim(&mut self, seq: i64) -> Option<AsyncJob> {
        let held = self.jobs.get_mut(&seq).filter(|h| !h.running)?;
        held.running = true;
        let job = AsyncJob {
            seq,
            endpoint: held.endpoint.clone(),
            id: held.id.clone(),
            accepted: held.accepted,
            attempts: held.attempts,
            job: serde_json::from_str(held.job.get()).unwrap_or(Value::Null),
        };
        let lane = self.lane(&job.endpoint);
        lane.queued.remove(&seq);
        lane.running.insert(seq);
        Some(job)
    }

    /// The live state as records, for a rewritten log.
    fn records(&self) -> Vec<Record> {
        let mut out = vec![Record::Next { seq: self.next_seq }];
        let mut seqs: Vec<&i64> = self.jobs.keys().collect();
        seqs.sort();
        for seq in seqs {
            let h = &self.jobs[seq];
            out.push(Record::Job {
                seq: *seq,
                endpoint: h.endpoint.clone(),
                id: h.id.clone(),
                accepted: h.accepted,
                attempts: h.attempts,
                started: h.started,
                job: h.job.clone(),
            });
        }
        for (seq, notice) in &self.notices {
            out.push(Record::Notice {
                seq: *seq,
                notice: notice.clone(),
            });
        }
        for (endpoint, hours) in &self.tallies {
            for (hour, tally) in hours {
                out.push(Record::Tally {
                    endpoint: endpoint.clone(),
                    hour: *hour,
                    tally: *tally,
                });
            }
        }
        out
    }
}

/// A job's `RequestTTLSeconds` and `InvocationTimeoutSeconds` (SageMaker's defaults when
/// absent).
fn limits(job: &RawValue) -> (u64, u64) {
    #[derive(Deserialize)]
    struct Limits {
        #[serde(rename = "RequestTTLSeconds")]
        ttl: Option<u64>,
        #[serde(rename = "InvocationTimeoutSeconds")]
        timeout: Option<u64>,
    }
    let limits: Option<Limits> = serde_json::from_str(job.get()).ok();
    (
        limits.as_ref().and_then(|l| l.ttl).unwrap_or(TTL_SECONDS.2),
        limits
            .as_ref()
            .and_then(|l| l.timeout)
            .unwrap_or(INVOCATION_TIMEOUT_SECONDS.2),
    )
}

/// The log file: where it is, the file open for appending, its length, and how many times
/// it was rewritten (offsets are of one generation).
struct Log {
    path: PathBuf,
    /// Shared, so that a sync runs outside the lock while others append.
    file: std::sync::Arc<std::fs::File>,
    len: u64,
    generation: u64,
    /// Where the ends whose objects are all in place end: what a checkpoint may cover.
    placed: u64,
    /// Why the log cannot be trusted any more (a sync failed: what it was to make durable
    /// may be lost, and a later sync would not say so); every write fails until a restart.
    broken: Option<String>,
}

/// A log smaller than this is never rewritten.
const REWRITE_FROM_BYTES: u64 = 64 << 20;

/// The log is rewritten when it is this many times what is live.
const REWRITE_RATIO: u64 = 4;

/// The asynchronous queue: in memory, and in its log when it has one.
pub(crate) struct Queue {
    index: Mutex<Index>,
    /// The log; `None` for a queue kept in memory only. Only the writer appends to it.
    log: Mutex<Option<Log>>,
    /// Jobs that a stop interrupted while they ran, as read back at start.
    interrupted: usize,
    /// The objects put in place unsynced since the last checkpoint, and when it was.
    unsynced: Mutex<Unsynced>,
    /// Held while a checkpoint is taken: one at a time.
    checkpointing: Mutex<()>,
}

/// The objects put in place since the last checkpoint.
struct Unsynced {
    paths: Vec<PathBuf>,
    since: std::time::Instant,
    /// An object kept in the log could not be put in place: no checkpoint is recorded
    /// until a restart has written it from the log.
    missing: bool,
}

impl Default for Unsynced {
    fn default() -> Self {
        Self {
            paths: Vec::new(),
            since: std::time::Instant::now(),
            missing: false,
        }
    }
}

impl Queue {
    /// A queue kept in memory only.
    pub(crate) fn in_memory() -> Self {
        Self {
            index: Mutex::default(),
            log: Mutex::new(None),
            interrupted: 0,
            unsynced: Mutex::default(),
            checkpointing: Mutex::new(()),
        }
    }

    /// The queue whose log is `path`, read back (created when missing); a record cut short
    /// at its end is cut off.
    pub(crate) fn open(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .with_context(|| {
                format!(
                    "cannot open the asynchronous queue's log {}",
                    path.display()
                )
            })?;
        // Its name, durable before any job is answered from it.
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("cannot sync {}", dir.display()))?;
        }
        let mut index = Index::default();
        let total = file
            .metadata()
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        // Streamed: the log can be far larger than what is live.
        let mut reader = std::io::BufReader::with_capacity(1 << 20, &file);
        let mut at = 0usize;
        // The objects kept in the ends no checkpoint covers: where their record is, path,
        // bytes.
        let mut unchecked: Vec<(usize, String, String)> = Vec::new();
        while let Some(record) = next_frame(&mut reader, total - at as u64)
            .with_context(|| format!("cannot read {}", path.display()))?
        {
            let next = at + 8 + record.len();
            match serde_json::from_slice::<Record>(&record) {
                Ok(Record::Checkpoint { upto }) => {
                    unchecked.retain(|(offset, _, _)| *offset as u64 >= upto);
                }
                Ok(mut record) => {
                    if let Record::End { object, .. } = &mut record {
                        if let Some((path, data)) = object.take() {
                            unchecked.push((at, path, data));
                        }
                    }
                    index.apply(record)
                }
                Err(e) => {
                    tracing::warn!(log = %path.display(), offset = at, error = %e, "a record of the asynchronous queue's log does not parse; it is skipped");
                }
            }
            at = next;
        }
        drop(reader);
        if (at as u64) < total {
            tracing::warn!(log = %path.display(), offset = at, bytes = total - at as u64, "the asynchronous queue's log ends in a record cut short (never answered); it is cut off");
            file.set_len(at as u64)
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot cut {} short", path.display()))?;
        }
        let interrupted = index.jobs.values().filter(|h| h.started).count();
        for held in index.jobs.values_mut() {
            held.started = false;
        }
        let objects: Vec<(String, String)> = unchecked
            .iter()
            .map(|(_, p, d)| (p.clone(), d.clone()))
            .collect();
        let restored = restore(&objects)?;
        if restored > 0 {
            tracing::warn!(
                objects = restored,
                "asynchronous results a crash lost were written again from the queue's log"
            );
        }
        let queue = Self {
            index: Mutex::new(index),
            log: Mutex::new(Some(Log {
                path: path.to_path_buf(),
                file: std::sync::Arc::new(file),
                len: at as u64,
                generation: 0,
                placed: at as u64,
                broken: None,
            })),
            interrupted,
            unsynced: Mutex::default(),
            checkpointing: Mutex::new(()),
        };
        if !unchecked.is_empty() {
            queue
                .append([Record::Checkpoint { upto: at as u64 }].iter(), true)
                .with_context(|| format!("cannot write to {}", path.display()))?;
        }
        Ok(queue)
    }

    /// Take over the queue a Plinth before schema 12 kept in the state database: its jobs
    /// waiting or running (their starts still counted) and its notifications not yet
    /// delivered are appended to the log, then its tables are dropped. Run at start, before
    /// the queue is used; after a crash in between, each is taken over once still. How many
    /// jobs.
    pub(crate) fn take_over(&self, store: &Store) -> anyhow::Result<usize> {
        let Some(legacy) = store.legacy_queue()? else {
            return Ok(0);
        };
        let mut records = Vec::new();
        {
            let mut index = self.index();
            let jobs: HashSet<(String, String)> = index
                .jobs
                .values()
                .map(|h| (h.endpoint.clone(), h.id.clone()))
                .collect();
            let notices: HashSet<(String, String)> = index
                .notices
                .values()
                .map(|n| (n.url.clone(), n.message.get().to_string()))
                .collect();
            for job in legacy.jobs {
                if jobs.contains(&(job.endpoint.clone(), job.id.clone())) {
                    continue;
                }
                let Ok(text) = RawValue::from_string(job.job) else {
                    tracing::warn!(endpoint = %job.endpoint, id = %job.id, "a queued asynchronous job's request does not parse; it is dropped");
                    continue;
                };
                let seq = index.next_seq;
                index.next_seq += 1;
                records.push(Record::Job {
                    seq,
                    endpoint: job.endpoint,
                    id: job.id,
                    accepted: job.accepted,
                    attempts: job.attempts,
                    started: false,
                    job: text,
                });
            }
            for n in legacy.notifications {
                if notices.contains(&(n.url.clone(), n.message.clone())) {
                    continue;
                }
                let Ok(message) = RawValue::from_string(n.message) else {
                    continue;
                };
                let seq = index.next_seq;
                index.next_seq += 1;
                records.push(Record::Notice {
                    seq,
                    notice: Notice {
                        endpoint: n.endpoint,
                        url: n.url,
                        message,
                        attempts: n.attempts,
                        state: DeliveryState::Pending,
                        next_at: n.next_at,
                        last_try: n.last_try,
                        ended: n.accepted,
                    },
                });
            }
        }
        let jobs = records
            .iter()
            .filter(|r| matches!(r, Record::Job { .. }))
            .count();
        self.append(records.iter(), true)?;
        let mut index = self.index();
        for record in records {
            index.apply(record);
        }
        drop(index);
        store.drop_legacy_queue()?;
        Ok(jobs)
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many jobs a stop interrupted while they ran (read back at start; they wait
    /// again).
    pub(crate) fn interrupted(&self) -> usize {
        self.interrupted
    }

    /// Append `writes` in one batch, synced before any of them takes effect (unless they
    /// are only starts and releases: one lost to a power failure costs a start's count, not
    /// a job): each one's result, in order. Finishing, starting or releasing a job that is
    /// not held (done already) changes nothing (and queues no second notification). When
    /// the log cannot be written, every write fails with it and none takes effect. Writes
    /// of one job come one at a time (its task's); the writer calls
    /// [`Queue::rewrite_if_due`] between batches.
    pub(crate) fn write(&self, writes: &[QueueWrite]) -> Vec<Result<(), StoreError>> {
        let (results, placing) = self.write_unplaced(writes);
        self.place(writes, placing);
        results
    }

    /// [`Queue::write`] but for putting the ends' objects in place: [`Queue::place`] does,
    /// given the log's length this returns (the writer answers the other writes first).
    pub(crate) fn write_unplaced(
        &self,
        writes: &[QueueWrite],
    ) -> (Vec<Result<(), StoreError>>, Placing) {
        // The requests as JSON text, before the index is locked.
        let mut texts: Vec<Option<Box<RawValue>>> = writes
            .iter()
            .map(|w| match w {
                QueueWrite::Insert { job, .. } => RawValue::from_string(job.to_string()).ok(),
                _ => None,
            })
            .collect();
        let mut records = Vec::with_capacity(writes.len());
        // Whether the batch must be synced: a start or a release lost to a power failure
        // costs a start's count, not a job.
        let mut sync = false;
        {
            let mut index = self.index();
            let mut ended = BTreeSet::new();
            for (write, text) in writes.iter().zip(texts.iter_mut()) {
                let record = match write {
                    QueueWrite::Insert {
                        endpoint,
                        id,
                        accepted,
                        ..
                    } => {
                        let seq = index.next_seq;
                        index.next_seq += 1;
                        sync = true;
                        text.take().map(|job| Record::Job {
                            seq,
                            endpoint: endpoint.clone(),
                            id: id.clone(),
                            accepted: *accepted,
                            attempts: 0,
                            started: false,
                            job,
                        })
                    }
                    QueueWrite::Start { seq } => (index.holds(*seq) && !ended.contains(seq))
                        .then_some(Record::Start { seq: *seq }),
                    QueueWrite::Release { seq, uncount } => {
                        (index.holds(*seq) && !ended.contains(seq)).then_some(Record::Release {
                            seq: *seq,
                            uncount: *uncount,
                        })
                    }
                    QueueWrite::Finish {
                        seq,
                        outcome,
                        notification,
                        object,
                    } => (index.holds(*seq) && ended.insert(*seq)).then(|| {
                        sync = true;
                        Record::End {
                            seq: *seq,
                            at: super::now(),
                            completed: outcome["Status"] == "Completed",
                            notify: notification.as_ref().and_then(|(url, message)| {
                                RawValue::from_string(message.to_string())
                                    .ok()
                                    .map(|m| (url.clone(), m))
                            }),
                            object: object.as_ref().map(|o| {
                                use base64::Engine;
                                (
                                    o.path.to_string_lossy().into_owned(),
                                    base64::engine::general_purpose::STANDARD.encode(&o.bytes),
                                )
                            }),
                        }
                    }),
                    QueueWrite::Delivery {
                        seq,
                        attempts,
                        state,
                        next_at,
                        last_try,
                    } => index.notices.contains_key(seq).then(|| {
                        sync = true;
                        Record::Try {
                            seq: *seq,
                            attempts: *attempts,
                            state: *state,
                            next_at: *next_at,
                            last_try: last_try.clone(),
                        }
                    }),
                };
                records.push(record);
            }
        }
        let upto = match self.append(records.iter().flatten(), sync) {
            Ok(upto) => upto,
            Err(e) => {
                let message = format!("the asynchronous queue's log could not be written: {e}");
                let failed = writes
                    .iter()
                    .map(|_| Err(StoreError::Failed(message.clone())))
                    .collect();
                return (failed, Placing::default());
            }
        };
        // The objects whose end was written, to put in place; the others' staged files go.
        let mut placing = Placing {
            upto,
            objects: Vec::new(),
        };
        for (i, (write, record)) in writes.iter().zip(&records).enumerate() {
            if let QueueWrite::Finish {
                object: Some(object),
                ..
            } = write
            {
                if matches!(record, Some(Record::End { .. })) {
                    placing.objects.push(i);
                } else {
                    let _ = std::fs::remove_file(&object.staged);
                }
            }
        }
        let mut index = self.index();
        for record in records.into_iter().flatten() {
            index.apply(record);
        }
        drop(index);
        (writes.iter().map(|_| Ok(())).collect(), placing)
    }

    /// Put the objects of `writes`' ends that were written in place, now that the log
    /// holds them (`placing`, from [`Queue::write_unplaced`]); a checkpoint covers them from
    /// then on.
    pub(crate) fn place(&self, writes: &[QueueWrite], placing: Placing) {
        let upto = placing.upto;
        let mut placed = Vec::new();
        for i in placing.objects {
            if let Some(QueueWrite::Finish {
                object: Some(object),
                ..
            }) = writes.get(i)
            {
                if let Some(path) = self.put_in_place(object) {
                    placed.push(path);
                }
            }
        }
        if placed.is_empty() {
            return;
        }
        self.unsynced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .paths
            .extend(placed);
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(log) = log.as_mut() {
            log.placed = log.placed.max(upto);
        }
    }

    /// Rename a logged object into place (unsynced: the log holds it); when its staged file
    /// is gone, write it there from its bytes. Its path, once there.
    fn put_in_place(&self, object: &Object) -> Option<PathBuf> {
        let placed = std::fs::rename(&object.staged, &object.path).or_else(|_| {
            let dir = object.path.parent().unwrap_or(Path::new("."));
            let mut staged = tempfile::Builder::new()
                .prefix(".partial-")
                .tempfile_in(dir)?;
            staged.write_all(&object.bytes)?;
            staged.persist(&object.path).map(drop).map_err(|e| e.error)
        });
        match placed {
            Ok(()) => Some(object.path.clone()),
            Err(e) => {
                tracing::error!(path = %object.path.display(), error = %e, "an asynchronous result could not be put in place; it is written from the queue's log at the next start");
                self.unsynced
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .missing = true;
                None
            }
        }
    }

    /// When the objects put in place since the last checkpoint are a second old (or
    /// `now`), sync their file systems and record a checkpoint (up to where the log ended
    /// when they were taken: their ends are before it). Called by a thread of its own, so
    /// that the syncs never hold up the writer, and by the writer before a rewrite.
    pub(crate) fn checkpoint_if_due(&self, now: bool) {
        let _one = self.checkpointing.lock().unwrap_or_else(|e| e.into_inner());
        let (paths, upto, generation) = {
            let mut unsynced = self.unsynced.lock().unwrap_or_else(|e| e.into_inner());
            if unsynced.paths.is_empty()
                || unsynced.missing
                || (!now && unsynced.since.elapsed() < CHECKPOINT_EVERY)
            {
                return;
            }
            unsynced.since = std::time::Instant::now();
            let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            let (upto, generation) = log.as_ref().map_or((0, 0), |l| (l.placed, l.generation));
            (std::mem::take(&mut unsynced.paths), upto, generation)
        };
        let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        if let Some(Err(e)) = make_durable(&refs).into_iter().find(Result::is_err) {
            tracing::warn!(error = %e, "asynchronous results could not be synced; they are checked at the next start");
            // Not recorded: the next checkpoint covers them (but for those whose directory is
            // gone since: nothing of them is left to sync).
            let mut unsynced = self.unsynced.lock().unwrap_or_else(|e| e.into_inner());
            unsynced.paths.extend(
                paths
                    .into_iter()
                    .filter(|p| p.parent().is_some_and(Path::is_dir)),
            );
            return;
        }
        // Not if the log was rewritten since (its offsets are of another generation, and
        // the rewrite synced first). Unsynced itself: a checkpoint lost costs a check at
        // start, not an object.
        let current = {
            let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            log.as_ref().is_some_and(|l| l.generation == generation)
        };
        if current {
            if let Err(e) = self.append([Record::Checkpoint { upto }].iter(), false) {
                tracing::warn!(error = %e, "the asynchronous queue's checkpoint could not be written");
            }
        }
    }

    /// Append `records` to the log (synced when `sync`); on failure the log is cut back to
    /// where it was.
    fn append<'a>(
        &self,
        records: impl Iterator<Item = &'a Record>,
        sync: bool,
    ) -> std::io::Result<u64> {
        let mut buf = Vec::with_capacity(4096);
        for record in records {
            put_frame(&mut buf, record)?;
        }
        let (file, len) = {
            let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            let Some(log) = log.as_mut() else {
                return Ok(0);
            };
            if let Some(why) = &log.broken {
                return Err(std::io::Error::other(why.clone()));
            }
            if buf.is_empty() {
                return Ok(log.len);
            }
            if let Err(e) = (&*log.file).write_all(&buf) {
                if let Err(cut) = log.file.set_len(log.len) {
                    tracing::error!(log = %log.path.display(), error = %cut, "the asynchronous queue's log could not be cut back after a failed write");
                    log.broken = Some(format!(
                        "the log could not be cut back after a failed write ({cut}); restart Plinth"
                    ));
                }
                return Err(e);
            }
            log.len += buf.len() as u64;
            (log.file.clone(), log.len)
        };
        if !sync {
            return Ok(len);
        }
        // Outside the lock: others append meanwhile (a sync covers what was written before
        // it started, and may cover more).
        file.sync_data().inspect_err(|e| {
            let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(log) = log.as_mut() {
                tracing::error!(log = %log.path.display(), error = %e, "the asynchronous queue's log could not be synced; the queue takes no more writes until Plinth restarts");
                log.broken = Some(format!("the log could not be synced ({e}); restart Plinth"));
            }
        })?;
        Ok(len)
    }

    /// Rewrite the log with only the live records when it has grown to
    /// [`REWRITE_RATIO`] times them (and at least [`REWRITE_FROM_BYTES`]).
    pub(crate) fn rewrite_if_due(&self) {
        {
            let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            let Some(current) = log.as_ref() else {
                return;
            };
            let live = self.index().live_bytes;
            if current.len < REWRITE_FROM_BYTES || current.len < REWRITE_RATIO * live {
                return;
            }
        }
        // The ends' objects must be durable in place before their records go.
        self.checkpoint_if_due(true);
        if self
            .unsynced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .missing
            || !self
                .unsynced
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .paths
                .is_empty()
        {
            return;
        }
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let Some(current) = log.as_mut() else {
            return;
        };
        let records = self.index().records();
        match rewrite(&current.path, &records, current.generation + 1) {
            Ok(next) => {
                tracing::debug!(log = %current.path.display(), from = current.len, to = next.len, "the asynchronous queue's log was rewritten");
                *current = next;
            }
            Err(e) => {
                tracing::warn!(log = %current.path.display(), error = %e, "the asynchronous queue's log could not be rewritten; it goes on growing");
            }
        }
    }

    /// Claim up to `limit` of `endpoint`'s oldest waiting jobs: they become running (the
    /// job as it was: `attempts` its starts so far; a start is counted when the job is
    /// invoked, [`QueueWrite::Start`]).
    pub(crate) fn claim(&self, endpoint: &str, limit: usize) -> Vec<AsyncJob> {
        let mut index = self.index();
        let Some(lane) = index.lanes.get(endpoint) else {
            return Vec::new();
        };
        let seqs: Vec<i64> = lane.queued.iter().take(limit).copied().collect();
        seqs.into_iter()
            .filter_map(|seq| index.claim(seq))
            .collect()
    }

    /// Claim waiting job `seq`, if it still waits.
    pub(crate) fn claim_job(&self, seq: i64) -> Option<AsyncJob> {
        self.index().claim(seq)
    }

    /// A claimed job that did not run goes back to waiting (a claim is not written, so
    /// neither is this).
    pub(crate) fn unclaim(&self, seq: i64) {
        let mut index = self.index();
        let Some(held) = index.jobs.get_mut(&seq).filter(|h| h.running) else {
            return;
        };
        held.running = false;
        let endpoint = held.endpoint.clone();
        let lane = index.lane(&endpoint);
        lane.running.remove(&seq);
        lane.queued.insert(seq);
    }

    /// The endpoints with waiting jobs.
    pub(crate) fn endpoints_with_jobs(&self) -> Vec<String> {
        let index = self.index();
        let mut out: Vec<String> = index
            .lanes
            .iter()
            .filter(|(_, lane)| !lane.queued.is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        out.sort();
        out
    }

    /// Up to `limit` of `endpoint`'s waiting jobs that can only fail, oldest first: accepted
    /// before `created` (the endpoint was deleted and created again since), or failed by
    /// `plinth_policy::async_inference::fate` at `now` (past their time to live, or started
    /// too many times). Their sequence numbers.
    pub(crate) fn doomed(&self, endpoint: &str, now: f64, created: f64, limit: usize) -> Vec<i64> {
        let index = self.index();
        let Some(lane) = index.lanes.get(endpoint) else {
            return Vec::new();
        };
        lane.queued
            .iter()
            .filter(|seq| {
                index.jobs.get(*seq).is_some_and(|held| {
                    held.accepted < created || fate(&held.queued(), now) != Fate::Run
                })
            })
            .take(limit)
            .copied()
            .collect()
    }

    /// `endpoint`'s backlog: jobs waiting or running accepted since `since` (the endpoint's
    /// creation: an endpoint deleted and created again does not count the jobs of the old
    /// one, which fail), and when the oldest was accepted.
    pub(crate) fn backlog(&self, endpoint: &str, since: f64) -> (u64, Option<f64>) {
        let index = self.index();
        let Some(lane) = index.lanes.get(endpoint) else {
            return (0, None);
        };
        let mut size = lane.queued.len() as u64;
        let mut oldest: Option<f64> = None;
        // Waiting jobs are in the order they were accepted: those of an older endpoint
        // come first.
        for seq in &lane.queued {
            let Some(accepted) = index.jobs.get(seq).map(|h| h.accepted) else {
                continue;
            };
            if accepted >= since {
                oldest = Some(accepted);
                break;
            }
            size -= 1;
        }
        for seq in &lane.running {
            let Some(accepted) = index.jobs.get(seq).map(|h| h.accepted) else {
                continue;
            };
            if accepted >= since {
                size += 1;
                oldest = Some(oldest.map_or(accepted, |o| o.min(accepted)));
            }
        }
        (size, oldest)
    }

    /// `endpoint`'s queue at a glance, at `now`.
    pub(crate) fn status(&self, endpoint: &str, now: f64) -> QueueStatus {
        let mut index = self.index();
        index.forget(now - KEEP_SECONDS);
        let mut status = QueueStatus::default();
        if let Some(lane) = index.lanes.get(endpoint) {
            status.queued = lane.queued.len() as u64;
            status.running = lane.running.len() as u64;
        }
        for tally in index
            .tallies
            .get(endpoint)
            .into_iter()
            .flat_map(|h| h.values())
        {
            status.completed += tally.completed;
            status.failed += tally.failed;
            status.notifications_delivered += tally.delivered;
            status.notifications_failed += tally.gave_up;
        }
        let mut undelivered = Vec::new();
        for n in index.notices.values().rev() {
            if n.endpoint != endpoint {
                continue;
            }
            if n.state == DeliveryState::Pending {
                status.notifications_pending += 1;
            }
            if n.attempts > 0 && undelivered.len() < UNDELIVERED_LISTED {
                undelivered.push((
                    n.url.clone(),
                    n.attempts,
                    n.last_try.clone().unwrap_or_default(),
                ));
            }
        }
        status.undelivered = undelivered;
        status
    }

    /// Forget counts of ends and notifications given up older than a day at `now` (the
    /// runner calls it now and then; [`Queue::status`] does too).
    pub(crate) fn forget(&self, now: f64) {
        self.index().forget(now - KEEP_SECONDS);
    }

    /// Up to `limit` notifications due for a try at `now`, the earliest due first.
    pub(crate) fn due_notifications(&self, now: f64, limit: usize) -> Vec<Notification> {
        let index = self.index();
        index
            .due
            .range(..=(time_key(now), i64::MAX))
            .filter_map(|(_, seq)| {
                let n = index.notices.get(seq)?;
                Some(Notification {
                    seq: *seq,
                    endpoint: n.endpoint.clone(),
                    url: n.url.clone(),
                    message: n.message.get().to_string(),
                    attempts: n.attempts,
                })
            })
            .take(limit)
            .collect()
    }
}

/// Check the objects kept in the ends after the last checkpoint (path, base64 bytes)
/// against their files, and write those a crash lost again (synced); how many.
fn restore(objects: &[(String, String)]) -> anyhow::Result<usize> {
    use base64::Engine;
    let mut restored = 0;
    // The newest record for a path wins.
    let mut latest: HashMap<&str, &str> = HashMap::new();
    for (path, data) in objects {
        latest.insert(path, data);
    }
    for (path, data) in latest {
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data) else {
            continue;
        };
        if same(Path::new(path), &bytes) {
            continue;
        }
        let path = Path::new(path);
        let dir = path.parent().unwrap_or(Path::new("."));
        let write = || -> std::io::Result<()> {
            // Not into a directory removed since (an operator's choice).
            if !dir.is_dir() {
                return Err(std::io::Error::other("its directory is gone"));
            }
            let mut staged = tempfile::Builder::new()
                .prefix(".partial-")
                .tempfile_in(dir)?;
            staged.write_all(&bytes)?;
            staged.as_file().sync_all()?;
            staged.persist(path).map_err(|e| e.error)?;
            std::fs::File::open(dir)?.sync_all()
        };
        match write() {
            Ok(()) => restored += 1,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "an asynchronous result a crash lost could not be written again");
            }
        }
    }
    Ok(restored)
}

/// Whether the regular file at `path` (not a link, a FIFO or a device) holds `bytes`.
fn same(path: &Path, bytes: &[u8]) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(mut file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    else {
        return false;
    };
    if !file
        .metadata()
        .is_ok_and(|m| m.is_file() && m.len() == bytes.len() as u64)
    {
        return false;
    }
    let mut found = Vec::with_capacity(bytes.len());
    file.read_to_end(&mut found).is_ok() && found == bytes
}

/// Make each of `files` durable (its data and its name): its file system synced, once per
/// file system; the files of a file system that cannot be synced are synced one by one
/// (with their directories). Each file's result, in order.
pub(crate) fn make_durable(files: &[&Path]) -> Vec<std::io::Result<()>> {
    use std::os::unix::fs::MetadataExt;
    // Per directory, its file system's device; per device, whether it was synced.
    let mut devices: HashMap<PathBuf, std::io::Result<u64>> = HashMap::new();
    let mut synced: HashMap<u64, bool> = HashMap::new();
    files
        .iter()
        .map(|file| {
            let dir = file.parent().unwrap_or(Path::new("/")).to_path_buf();
            let device = devices
                .entry(dir.clone())
                .or_insert_with(|| std::fs::metadata(&dir).map(|m| m.dev()));
            let device = match device {
                Ok(device) => *device,
                Err(e) => return Err(std::io::Error::new(e.kind(), e.to_string())),
            };
            let whole = *synced.entry(device).or_insert_with(|| {
                let done = std::fs::File::open(&dir).and_then(|d| Ok(rustix::fs::syncfs(&d)?));
                if let Err(e) = &done {
                    tracing::warn!(dir = %dir.display(), error = %e, "a file system could not be synced; its files are synced one by one");
                }
                done.is_ok()
            });
            if whole {
                return Ok(());
            }
            std::fs::File::open(file)?.sync_all()?;
            std::fs::File::open(&dir)?.sync_all()
        })
        .collect()
}

/// The most one record may be (a job's request, or an end with a result of up to
/// [`LOGGED_OBJECT_BYTES`], are far smaller).
const MAX_RECORD_BYTES: u32 = 64 << 20;

/// The next record from `reader`, of the `left` bytes the log has from here: `Ok(None)` at
/// the end, or when what is there is not a whole record (cut short, zeros, or not what was
/// written: a crash's torn tail); an error when the file cannot be read.
fn next_frame(reader: &mut impl Read, left: u64) -> std::io::Result<Option<Vec<u8>>> {
    let cut = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Ok(None)
        } else {
            Err(e)
        }
    };
    let mut header = [0u8; 8];
    if let Err(e) = reader.read_exact(&mut header) {
        return cut(e);
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 || len > MAX_RECORD_BYTES || u64::from(len) > left.saturating_sub(8) {
        return Ok(None);
    }
    let mut record = vec![0u8; len as usize];
    if let Err(e) = reader.read_exact(&mut record) {
        return cut(e);
    }
    Ok((crc32fast::hash(&record) == crc).then_some(record))
}

/// Append `record`'s frame to `buf`.
fn put_frame(buf: &mut Vec<u8>, record: &Record) -> std::io::Result<()> {
    let start = buf.len();
    buf.extend_from_slice(&[0; 8]);
    serde_json::to_writer(&mut *buf, record)?;
    let body = &buf[start + 8..];
    let len = u32::try_from(body.len())
        .map_err(|_| std::io::Error::other("a queue record over 4 GiB"))?;
    let crc = crc32fast::hash(body);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Write `records` as the log at `path`: a new file, synced, renamed over the old one, the
/// directory synced; the new log, open for appending.
fn rewrite(path: &Path, records: &[Record], generation: u64) -> std::io::Result<Log> {
    let next = path.with_extension("log.next");
    let mut buf = Vec::new();
    for record in records {
        put_frame(&mut buf, record)?;
    }
    {
        let mut file = std::fs::File::create(&next)?;
        file.write_all(&buf)?;
        file.sync_all()?;
    }
    std::fs::rename(&next, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    let file = std::fs::OpenOptions::new().append(true).open(path)?;
    Ok(Log {
        path: path.to_path_buf(),
        file: std::sync::Arc::new(file),
        len: buf.len() as u64,
        generation,
        placed: buf.len() as u64,
        broken: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn insert(endpoint: &str, id: &str, accepted: f64, job: Value) -> QueueWrite {
        QueueWrite::Insert {
            endpoint: endpoint.into(),
            id: id.into(),
            accepted,
            job,
        }
    }

    fn ok(results: Vec<Result<(), StoreError>>) {
        assert!(results.iter().all(Result::is_ok), "{results:?}");
    }

    #[test]
    fn jobs_queue_claim_finish_and_come_back_after_a_stop() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("async-queue.log");
        {
            let queue = Queue::open(&log).unwrap();
            let mut writes: Vec<QueueWrite> = (0..3)
                .map(|i| insert("e", &format!("j{i}"), 10.0 + f64::from(i), json!({"N": i})))
                .collect();
            writes.push(insert("other", "j0", 1.0, json!({"RequestTTLSeconds": 60})));
            ok(queue.write(&writes));
            assert_eq!(queue.endpoints_with_jobs(), vec!["e", "other"]);
            let claimed = queue.claim("e", 2);
            let ids: Vec<&str> = claimed.iter().map(|j| j.id.as_str()).collect();
            assert_eq!(ids, vec!["j0", "j1"], "oldest first");
            assert_eq!(claimed[0].attempts, 0);
            assert_eq!(claimed[1].job["N"], 1);
            assert_eq!(
                queue.backlog("e", 0.0),
                (3, Some(10.0)),
                "running and queued"
            );
            let finish = QueueWrite::Finish {
                seq: claimed[0].seq,
                outcome: json!({"Status": "Completed"}),
                notification: Some((
                    "http://hook/1".into(),
                    json!({"invocationStatus": "Completed"}),
                )),
                object: None,
            };
            // Finishing twice (a rerun) queues no second notification; j1 starts.
            let start = QueueWrite::Start {
                seq: claimed[1].seq,
            };
            ok(queue.write(&[finish.clone(), finish, start]));
            assert_eq!(queue.backlog("e", 0.0), (2, Some(11.0)));
            assert_eq!(queue.backlog("e", 11.5), (1, Some(12.0)), "since");
            // j1 is running when the process stops.
        }
        let queue = Queue::open(&log).unwrap();
        assert_eq!(queue.interrupted(), 1, "j1 was running");
        let due = queue.due_notifications(5.0, 10);
        assert_eq!(due.len(), 1, "the notification survived the stop");
        assert_eq!((due[0].url.as_str(), due[0].attempts), ("http://hook/1", 0));
        assert_eq!(due[0].endpoint, "e");
        assert_eq!(
            serde_json::from_str::<Value>(&due[0].message).unwrap(),
            json!({"invocationStatus": "Completed"})
        );
        let delivery = |attempts, state, next_at, last: &str| QueueWrite::Delivery {
            seq: due[0].seq,
            attempts,
            state,
            next_at,
            last_try: last.into(),
        };
        ok(queue.write(&[delivery(1, DeliveryState::Pending, 50.0, "503")]));
        assert!(queue.due_notifications(49.0, 10).is_empty());
        assert_eq!(queue.due_notifications(50.0, 10)[0].attempts, 1);
        let status = queue.status("e", super::super::now());
        assert_eq!(
            (status.queued, status.running, status.completed),
            (2, 0, 1),
            "j1 waits again"
        );
        assert_eq!(status.notifications_pending, 1);
        assert_eq!(
            status.undelivered,
            vec![("http://hook/1".to_string(), 1, "503".to_string())]
        );
        ok(queue.write(&[delivery(2, DeliveryState::Delivered, 0.0, "200")]));
        assert!(queue.due_notifications(1e12, 10).is_empty());
        let status = queue.status("e", super::super::now());
        assert_eq!(
            (status.notifications_delivered, status.notifications_pending),
            (1, 0)
        );
        // Doomed: past their time to live, or older than the endpoint.
        assert!(queue.doomed("other", 61.0, 0.0, 10).is_empty());
        let late = queue.doomed("other", 61.5, 0.0, 10);
        assert_eq!(late.len(), 1);
        assert_eq!(
            queue.doomed("other", 2.0, 1.5, 10),
            late,
            "older than the endpoint"
        );
        assert_eq!(queue.claim_job(late[0]).unwrap().id, "j0");
        assert!(queue.claim_job(late[0]).is_none(), "claimed once");
        let again: Vec<(String, u32)> = queue
            .claim("e", 10)
            .into_iter()
            .map(|j| (j.id, j.attempts))
            .collect();
        assert_eq!(
            again,
            vec![("j1".to_string(), 1), ("j2".to_string(), 0)],
            "the interrupted job keeps its start"
        );
    }

    #[test]
    fn a_release_uncounts_its_start_and_a_claim_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("q.log");
        let queue = Queue::open(&log).unwrap();
        ok(queue.write(&[insert("e", "a", 1.0, json!({}))]));
        let seq = queue.claim("e", 1)[0].seq;
        ok(queue.write(&[QueueWrite::Start { seq }]));
        ok(queue.write(&[QueueWrite::Release { seq, uncount: true }]));
        let job = queue.claim("e", 1).remove(0);
        assert_eq!(job.attempts, 0, "uncounted");
        queue.unclaim(seq);
        assert_eq!(queue.backlog("e", 0.0), (1, Some(1.0)));
        drop(queue);
        let queue = Queue::open(&log).unwrap();
        assert_eq!(
            queue.interrupted(),
            0,
            "released: not running when it stopped"
        );
        assert_eq!(queue.claim("e", 5).len(), 1);
    }

    #[test]
    fn a_record_cut_short_ends_the_log_and_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("q.log");
        {
            let queue = Queue::open(&log).unwrap();
            ok(queue.write(&[
                insert("e", "a", 1.0, json!({})),
                insert("e", "b", 2.0, json!({})),
            ]));
        }
        let whole = std::fs::metadata(&log).unwrap().len();
        // A crash in the middle of appending the next batch.
        let mut frame = Vec::new();
        put_frame(&mut frame, &Record::Start { seq: 0 }).unwrap();
        let mut bytes = std::fs::read(&log).unwrap();
        bytes.extend_from_slice(&frame[..frame.len() - 3]);
        std::fs::write(&log, &bytes).unwrap();
        let queue = Queue::open(&log).unwrap();
        assert_eq!(std::fs::metadata(&log).unwrap().len(), whole, "cut off");
        assert_eq!(queue.backlog("e", 0.0).0, 2);
        // A record whose bytes are not what was written ends the log too.
        drop(queue);
        let mut bytes = std::fs::read(&log).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0x20;
        std::fs::write(&log, &bytes).unwrap();
        let queue = Queue::open(&log).unwrap();
        assert_eq!(queue.backlog("e", 0.0).0, 1, "the damaged record is gone");
        // Zeros at the end (space allocated, never written) are no records either.
        drop(queue);
        let before = std::fs::metadata(&log).unwrap().len();
        let mut bytes = std::fs::read(&log).unwrap();
        bytes.extend_from_slice(&[0; 64]);
        std::fs::write(&log, &bytes).unwrap();
        let queue = Queue::open(&log).unwrap();
        assert_eq!(std::fs::metadata(&log).unwrap().len(), before);
        ok(queue.write(&[insert("e", "c", 3.0, json!({}))]));
        drop(queue);
        let queue = Queue::open(&log).unwrap();
        let ids: Vec<String> = queue.claim("e", 9).into_iter().map(|j| j.id).collect();
        assert_eq!(ids, vec!["a", "c"], "appended after the cut");
    }

    #[test]
    fn the_log_is_rewritten_to_what_is_live() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("q.log");
        let queue = Queue::open(&log).unwrap();
        let padding = "x".repeat(1 << 20);
        // 80 jobs of 1 MiB each go through: 80 MiB of records, 8 MiB of them live at the
        // end.
        for i in 0..80 {
            ok(queue.write(&[insert(
                "e",
                &format!("j{i}"),
                f64::from(i),
                json!({ "Pad": padding }),
            )]));
            let job = queue.claim("e", 1).remove(0);
            if i % 10 != 0 {
                ok(queue.write(&[QueueWrite::Finish {
                    seq: job.seq,
                    outcome: json!({"Status": if i % 2 == 0 { "Completed" } else { "Failed" }}),
                    notification: (i == 7).then(|| ("http://hook".to_string(), json!({"i": i}))),
                    object: None,
                }]));
            }
            // As the writer does between batches.
            queue.rewrite_if_due();
        }
        let len = std::fs::metadata(&log).unwrap().len();
        assert!(
            len < REWRITE_FROM_BYTES,
            "rewritten once past 64 MiB: {len}"
        );
        drop(queue);
        let queue = Queue::open(&log).unwrap();
        assert_eq!(queue.interrupted(), 0);
        let status = queue.status("e", 1000.0);
        assert_eq!(
            (
                status.queued,
                status.completed + status.failed,
                status.notifications_pending
            ),
            (8, 72, 1),
            "{status:?}"
        );
        ok(queue.write(&[insert("e", "next", 5000.0, json!({}))]));
        let ids: Vec<String> = queue.claim("e", 20).into_iter().map(|j| j.id).collect();
        assert_eq!(ids.len(), 9);
        assert_eq!(ids[0], "j0");
        assert_eq!(ids[8], "next", "sequence numbers go on after a rewrite");
    }

    #[test]
    fn the_queue_of_an_older_plinth_is_taken_over_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(
            store.legacy_queue().unwrap().is_none(),
            "a new database has none"
        );
        {
            // The tables as schema 11 had them, with a job waiting, one running (started
            // once), one done, and a notification pending.
            let conn = rusqlite::Connection::open(dir.path().join("plinth.db")).unwrap();
            conn.execute_batch(
                "CREATE TABLE async_jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
                   endpoint TEXT NOT NULL, id TEXT NOT NULL, state TEXT NOT NULL, \
                   accepted REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, \
                   job TEXT NOT NULL, outcome TEXT, UNIQUE (endpoint, id)); \
                 CREATE TABLE async_notifications (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
                   endpoint TEXT NOT NULL, job INTEGER NOT NULL, url TEXT NOT NULL, \
                   message TEXT NOT NULL, state TEXT NOT NULL, \
                   attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL, last_try TEXT); \
                 INSERT INTO async_jobs (endpoint, id, state, accepted, attempts, job) VALUES \
                   ('e', 'a', 'queued', 1.0, 0, '{\"N\":1}'), \
                   ('e', 'b', 'running', 2.0, 1, '{\"N\":2}'), \
                   ('e', 'c', 'completed', 3.0, 1, '{}'); \
                 INSERT INTO async_notifications (endpoint, job, url, message, state, attempts, next_at, last_try) \
                   VALUES ('e', 3, 'http://hook', '{\"m\":1}', 'pending', 2, 7.0, '503');",
            )
            .unwrap();
        }
        let log = dir.path().join("async-queue.log");
        let queue = Queue::open(&log).unwrap();
        assert_eq!(queue.take_over(&store).unwrap(), 2);
        assert!(
            store.legacy_queue().unwrap().is_none(),
            "its tables are dropped"
        );
        assert_eq!(queue.take_over(&store).unwrap(), 0);
        drop(queue);
        let queue = Queue::open(&log).unwrap();
        let jobs: Vec<(String, u32, Value)> = queue
            .claim("e", 9)
            .into_iter()
            .map(|j| (j.id, j.attempts, j.job))
            .collect();
        assert_eq!(
            jobs,
            vec![
                ("a".to_string(), 0, json!({"N": 1})),
                ("b".to_string(), 1, json!({"N": 2}))
            ]
        );
        let due = queue.due_notifications(7.0, 9);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].url.as_str(), due[0].attempts), ("http://hook", 2));
        // A job accepted after the restart does not take the notification's number.
        ok(queue.write(&[insert("e", "z", 9.0, json!({}))]));
        let seq = queue.claim("e", 9)[0].seq;
        ok(queue.write(&[QueueWrite::Finish {
            seq,
            outcome: json!({"Status": "Completed"}),
            notification: Some(("http://hook/z".into(), json!({"z": 1}))),
            object: None,
        }]));
        assert_eq!(queue.due_notifications(1e12, 9).len(), 2);
    }

    #[test]
    fn objects_kept_in_the_log_are_put_in_place_and_written_again_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("q.log");
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let end = |queue: &Queue, name: &str, bytes: &'static [u8]| {
            ok(queue.write(&[insert("e", name, 1.0, json!({}))]));
            let seq = queue.claim("e", 1)[0].seq;
            let staged = out.join(format!(".partial-{name}"));
            std::fs::write(&staged, bytes).unwrap();
            ok(queue.write(&[QueueWrite::Finish {
                seq,
                outcome: json!({"Status": "Completed"}),
                notification: None,
                object: Some(Object {
                    staged: staged.clone(),
                    path: out.join(format!("{name}.out")),
                    bytes: bytes::Bytes::from_static(bytes),
                }),
            }]));
            assert!(!staged.exists(), "renamed into place");
        };
        let read = |name: &str| std::fs::read(out.join(format!("{name}.out"))).ok();
        {
            let queue = Queue::open(&log).unwrap();
            end(&queue, "a", b"A");
            end(&queue, "b", b"BB");
            assert_eq!(read("a").as_deref(), Some(&b"A"[..]));
            // A power failure before the checkpoint: one file's data lost, the other's name.
            std::fs::write(out.join("a.out"), b"").unwrap();
            std::fs::remove_file(out.join("b.out")).unwrap();
        }
        let queue = Queue::open(&log).unwrap();
        assert_eq!(read("a").as_deref(), Some(&b"A"[..]), "written again");
        assert_eq!(read("b").as_deref(), Some(&b"BB"[..]));
        assert_eq!(queue.status("e", 1.0).completed, 2);
        // Once checkpointed, they are not looked at again.
        end(&queue, "c", b"C");
        queue.checkpoint_if_due(true);
        drop(queue);
        for name in ["a", "b", "c"] {
            std::fs::remove_file(out.join(format!("{name}.out"))).unwrap();
        }
        let _queue = Queue::open(&log).unwrap();
        assert_eq!((read("a"), read("b"), read("c")), (None, None, None));
    }

    #[test]
    fn a_queue_in_memory_works_without_a_log() {
        let queue = Queue::in_memory();
        ok(queue.write(&[insert("e", "a", 1.0, json!({"K": 1}))]));
        let job = queue.claim("e", 1).remove(0);
        assert_eq!(job.job["K"], 1);
        ok(queue.write(&[QueueWrite::Finish {
            seq: job.seq,
            outcome: json!({"Status": "Failed"}),
            notification: None,
            object: None,
        }]));
        assert_eq!(queue.status("e", 1.0).failed, 1);
        assert!(queue.endpoints_with_jobs().is_empty());
    }
}
