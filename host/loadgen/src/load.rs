//! The load engine shared by `loadgen` and `plinth bench`: HTTP/1.1 keep-alive requests
//! (hyper's low-level client, no pool of its own) to one URL, in one of two shapes.
//!
//! - **Closed loop** ([`Load::Concurrency`]): N tasks each hold one connection and send one
//!   request at a time, the next as soon as the previous answer has been read. A request counts
//!   when it completes inside the measurement window; its latency runs from when it was sent.
//! - **Open loop** ([`Load::Rate`]): request `i` is due at `i / rate` seconds after the start
//!   ([`scheduled_at`]), whether or not earlier ones have been answered. A scheduler thread
//!   (an OS thread, so its timing does not depend on the async timer's millisecond ticks)
//!   starts each request on time on an idle pooled connection or a new one, up to
//!   `max_in_flight` at once; a request due while that many are in flight is not sent and counts
//!   as `dropped`. A request counts when it was *due* inside the window, and its latency runs
//!   from when it was due, so time spent waiting behind a slow server (coordinated omission) is
//!   in the numbers.
//!
//! Both run a warm-up first (not counted), then measure for the duration; requests still in
//! flight at the end get [`GRACE`] more before counting as errors. Every request may get extra
//! headers from a [`HeaderHook`] (e.g. a SigV4 signature, which covers the body and the time).
//! While running, a [`Snapshot`] (requests, errors, the current rate) goes to a callback every
//! 100 ms, for a progress display. The result is a [`Tally`]: latency histogram, non-2xx
//! answers and transport errors counted apart with the first few messages, dropped requests,
//! and responses per `x-Amzn-Invoked-Production-Variant`.
//!
//! Dropping the future of [`run`] stops the load at once (its tasks are aborted).

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::summary::Tally;

/// The header Plinth (and SageMaker) use to name the variant that answered.
pub const VARIANT_HEADER: &str = "x-amzn-invoked-production-variant";

/// How long past the end of the run an in-flight request may take before it counts as an error.
pub const GRACE: Duration = Duration::from_secs(10);

/// The default cap on requests in flight in an open loop.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;

/// How often the progress callback gets a [`Snapshot`].
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// The span over which [`Snapshot::rps`] is measured.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// How much of a non-2xx body an error message keeps.
const MESSAGE_CHARS: usize = 200;

/// The longest single sleep of the open-loop scheduler, so that it notices a stop quickly.
const MAX_SLEEP: Duration = Duration::from_millis(50);

/// Extra headers for one request, computed from its body (e.g. a signature). Returns
/// `(name, value)` pairs; they replace headers of the same name.
pub type HeaderHook = Arc<dyn Fn(&[u8]) -> Vec<(String, String)> + Send + Sync>;

/// The shape of the load.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Load {
    /// Closed loop: this many connections, each with one request in flight.
    Concurrency(usize),
    /// Open loop: this many requests started per second.
    Rate(f64),
}

impl Load {
    /// The number that sizes the load (connections, or requests per second).
    pub fn level(&self) -> f64 {
        match *self {
            Load::Concurrency(n) => n as f64,
            Load::Rate(rate) => rate,
        }
    }
}

impl fmt::Display for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Load::Concurrency(n) => write!(f, "concurrency {n}"),
            Load::Rate(rate) => write!(f, "{rate} req/s"),
        }
    }
}

/// One run: its load, warm-up and measured duration.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Closed or open loop, and how much.
    pub load: Load,
    /// Time run before measuring (not counted).
    pub warmup: Duration,
    /// Time measured.
    pub duration: Duration,
    /// Open loop: requests in flight at most; more are dropped.
    pub max_in_flight: usize,
}

impl Plan {
    /// Refuses a plan that cannot run: no connections, a rate that is not a positive number,
    /// no in-flight requests allowed.
    pub fn check(&self) -> anyhow::Result<()> {
        match self.load {
            Load::Concurrency(0) => bail!("the concurrency must be at least 1"),
            Load::Rate(rate) if !(rate.is_finite() && rate > 0.0) => {
                bail!(
                    "the request rate must be a positive number of requests per second, not {rate}"
                )
            }
            Load::Rate(_) if self.max_in_flight == 0 => {
                bail!("the cap on requests in flight must be at least 1")
            }
            _ => Ok(()),
        }
    }
}

/// Where a run stands, given to the progress callback.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Time since the start, warm-up included.
    pub elapsed: Duration,
    /// Warm-up plus duration.
    pub total: Duration,
    /// Still in the warm-up.
    pub warming_up: bool,
    /// Requests answered in the measurement window so far (any status).
    pub requests: u64,
    /// Requests that got no answer, in the window.
    pub errors: u64,
    /// Answers with a status outside 2xx, in the window.
    pub non_2xx: u64,
    /// Open loop: requests not sent because the in-flight cap was reached, in the window.
    pub dropped: u64,
    /// Answers per second over the last second (warm-up included).
    pub rps: f64,
}

/// The request every run sends: URL, headers, body, and an optional per-request hook.
pub struct Target {
    url: String,
    authority: String,
    host: String,
    port: u16,
    path: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    hook: Option<HeaderHook>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("headers", &self.headers)
            .field("body_bytes", &self.body.len())
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

impl Target {
    /// POST `body` with `Content-Type: content_type` to `url` (http:// only).
    pub fn new(url: &str, content_type: &str, body: impl Into<Bytes>) -> anyhow::Result<Self> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("{url:?} is not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => bail!("{url:?}: https is not supported; give an http:// URL"),
            _ => bail!("{url:?} is not an http:// URL"),
        }
        let authority = uri
            .authority()
            .with_context(|| format!("{url:?} has no host"))?
            .clone();
        let path: Uri = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .context("the URL's path")?;
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        Ok(Self {
            url: url.to_string(),
            authority: authority.as_str().to_string(),
            host: host.to_string(),
            port: authority.port_u16().unwrap_or(80),
            path,
            headers: vec![
                (HOST, HeaderValue::from_str(authority.as_str())?),
                (
                    CONTENT_TYPE,
                    HeaderValue::from_str(content_type)
                        .with_context(|| format!("{content_type:?} is not a valid Content-Type"))?,
                ),
            ],
            body: body.into(),
            hook: None,
        })
    }

    /// Adds a header to every request (replacing one of the same name).
    pub fn header(mut self, name: &str, value: &str) -> anyhow::Result<Self> {
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .with_context(|| format!("{name:?} is not a valid header name"))?;
        let value = HeaderValue::from_str(value.trim())
            .with_context(|| format!("{value:?} is not a valid header value"))?;
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value));
        Ok(self)
    }

    /// Calls `hook` for every request and adds the headers it returns.
    pub fn with_hook(mut self, hook: HeaderHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// The URL, as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `host[:port]`, as sent in `Host`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The path and query, as sent on the request line.
    pub fn path_and_query(&self) -> &str {
        self.path.path_and_query().map_or("/", |p| p.as_str())
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    fn request(&self) -> Result<Request<Full<Bytes>>, String> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.path.clone();
        let headers = request.headers_mut();
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(hook) = &self.hook {
            for (name, value) in hook(&self.body) {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("the header hook gave a bad header name {name:?}"))?;
                let value = HeaderValue::from_str(&value)
                    .map_err(|_| format!("the header hook gave a bad value for {name}"))?;
                headers.insert(name, value);
            }
        }
        Ok(request)
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let cannot = |e: &dyn fmt::Display| format!("cannot connect to {}: {e}", self.authority);
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| cannot(&e))?;
        stream.set_nodelay(true).map_err(|e| cannot(&e))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| cannot(&e))?;
        tokio::spawn(async move {
            // Ends when the server closes the connection or the sender is dropped.
            let _ = connection.await;
        });
        Ok(sender)
    }
}

/// `Name: value` (as curl's `-H`) split into name and value.
pub fn parse_header(line: &str) -> anyhow::Result<(String, String)> {
    let (name, value) = line
        .split_once(':')
        .with_context(|| format!("{line:?}: expected `Name: value`"))?;
    Ok((name.trim().to_string(), value.trim().to_string()))
}

/// The offset from the start at which an open loop at `rate` requests per second starts
/// request `i` (counting from 0).
pub fn scheduled_at(i: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / rate)
}

/// How many requests an open loop at `rate` starts in `[from, to)` (offsets from its start):
/// those `i` with `from <= i / rate < to`.
pub fn scheduled_between(rate: f64, from: Duration, to: Duration) -> u64 {
    let first = |t: Duration| (t.as_secs_f64() * rate).ceil() as u64;
    first(to).saturating_sub(first(from))
}

/// One answer: its status, the variant that answered, and (for a non-2xx answer when asked
/// for) a message.
struct Answer {
    status: u16,
    variant: Option<String>,
    detail: Option<String>,
}

impl Answer {
    fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A non-2xx answer as a message: the status and the start of the body.
fn describe_status(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        return format!("HTTP {status}");
    }
    let mut snippet: String = text.chars().take(MESSAGE_CHARS).collect();
    if snippet.len() < text.len() {
        snippet.push('…');
    }
    format!("HTTP {status}: {snippet}")
}

async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
    want_detail: bool,
) -> Result<(Answer, Bytes), String> {
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("{e}"))?;
    let status = response.status().as_u16();
    let variant = response
        .headers()
        .get(VARIANT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // Read the whole body: the connection is reusable only after that.
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    let detail =
        (want_detail && !(200..300).contains(&status)).then(|| describe_status(status, &body));
    Ok((
        Answer {
            status,
            variant,
            detail,
        },
        body,
    ))
}

/// The answer to one request sent on a new connection (to check a target before loading it).
#[derive(Clone, Debug)]
pub struct ProbeAnswer {
    /// The HTTP status.
    pub status: u16,
    /// `x-Amzn-Invoked-Production-Variant`, if the answer names one.
    pub variant: Option<String>,
    /// The body.
    pub body: Bytes,
}

impl ProbeAnswer {
    /// The status and the start of the body, as one line.
    pub fn describe(&self) -> String {
        describe_status(self.status, &self.body)
    }
}

/// Sends one request to `target` on a new connection and returns the answer; an error if the
/// connection fails or no answer comes within `timeout`.
pub async fn probe(target: &Target, timeout: Duration) -> anyhow::Result<ProbeAnswer> {
    let exchange = async {
        let mut sender = target.connect().await?;
        let request = target.request()?;
        send(&mut sender, request, false).await
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok((answer, body))) => Ok(ProbeAnswer {
            status: answer.status,
            variant: answer.variant,
            body,
        }),
        Ok(Err(message)) => bail!("{} does not answer: {message}", target.url),
        Err(_) => bail!(
            "{} does not answer: no answer within {} s",
            target.url,
            timeout.as_secs_f64()
        ),
    }
}

/// Counters shared by every task of a run, read by the progress callback.
#[derive(Default)]
struct Live {
    /// Answers, warm-up included (for the current rate).
    answered: AtomicU64,
    /// Answers in the window.
    requests: AtomicU64,
    errors: AtomicU64,
    non_2xx: AtomicU64,
    dropped: AtomicU64,
}

impl Live {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// When a run starts, starts measuring and ends.
#[derive(Clone, Copy, Debug)]
struct Window {
    start: Instant,
    measure_from: Instant,
    end: Instant,
}

impl Window {
    fn contains(&self, t: Instant) -> bool {
        t >= self.measure_from && t <= self.end
    }
}

/// Builds snapshots: elapsed time and the answer rate over the last [`RATE_WINDOW`].
struct Meter {
    window: Window,
    recent: VecDeque<(Instant, u64)>,
}

impl Meter {
    fn new(window: Window) -> Self {
        Self {
            window,
            recent: VecDeque::new(),
        }
    }

    fn snapshot(&mut self, live: &Live) -> Snapshot {
        let now = Instant::now();
        let answered = live.answered.load(Ordering::Relaxed);
        self.recent.push_back((now, answered));
        while self.recent.len() > 2 && now - self.recent[0].0 > RATE_WINDOW {
            self.recent.pop_front();
        }
        let (then, answered_then) = self.recent[0];
        let span = (now - then).as_secs_f64();
        let total = self.window.end - self.window.start;
        Snapshot {
            elapsed: (now - self.window.start).min(total),
            total,
            warming_up: now < self.window.measure_from,
            requests: live.requests.load(Ordering::Relaxed),
            errors: live.errors.load(Ordering::Relaxed),
            non_2xx: live.non_2xx.load(Ordering::Relaxed),
            dropped: live.dropped.load(Ordering::Relaxed),
            rps: if span > 0.0 {
                (answered - answered_then) as f64 / span
            } else {
                0.0
            },
        }
    }
}

/// Runs `plan` against `target`, calling `progress` every 100 ms and once at the end; returns
/// what was measured. Needs a Tokio runtime with timers and I/O; dropping the future stops the
/// load.
pub async fn run(
    target: Arc<Target>,
    plan: &Plan,
    progress: &mut dyn FnMut(&Snapshot),
) -> anyhow::Result<Tally> {
    plan.check()?;
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let window = Window {
        start,
        measure_from,
        end: measure_from + plan.duration,
    };
    let live = Arc::new(Live::default());
    let mut meter = Meter::new(window);
    let tally = match plan.load {
        Load::Concurrency(connections) => {
            closed(target, connections, window, &live, &mut meter, progress).await?
        }
        Load::Rate(rate) => {
            open(
                target,
                rate,
                plan.max_in_flight,
                window,
                &live,
                &mut meter,
                progress,
            )
            .await?
        }
    };
    progress(&meter.snapshot(&live));
    Ok(tally)
}

fn ticker() -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(PROGRESS_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    ticker
}

async fn closed(
    target: Arc<Target>,
    connections: usize,
    window: Window,
    live: &Arc<Live>,
    meter: &mut Meter,
    progress: &mut dyn FnMut(&Snapshot),
) -> anyhow::Result<Tally> {
    let mut tasks = JoinSet::new();
    for _ in 0..connections {
        tasks.spawn(run_connection(target.clone(), window, live.clone()));
    }
    let mut tally = Tally::default();
    let mut ticker = ticker();
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(result) => tally.merge(&result.context("a connection task panicked")?),
                None => break,
            },
            _ = ticker.tick() => progress(&meter.snapshot(live)),
        }
    }
    Ok(tally)
}

/// Records an answer that came in the window.
fn record(tally: &mut Tally, live: &Live, latency: Duration, answer: Answer) {
    tally.record(latency, answer.status, answer.variant.as_deref());
    Live::add(&live.requests);
    if !answer.is_success() {
        Live::add(&live.non_2xx);
        if let Some(detail) = answer.detail {
            tally.note(|| detail);
        }
    }
}

/// One connection's closed loop, until the end of the window. Requests are counted when they
/// complete inside it.
async fn run_connection(target: Arc<Target>, window: Window, live: Arc<Live>) -> Tally {
    let mut tally = Tally::default();
    let fail = |tally: &mut Tally, at: Instant, message: String| {
        if window.contains(at) {
            Live::add(&live.errors);
            tally.record_error(|| message);
        }
    };
    'connect: while Instant::now() < window.end {
        let mut sender = match target.connect().await {
            Ok(sender) => sender,
            Err(message) => {
                fail(&mut tally, Instant::now(), message);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while Instant::now() < window.end {
            if sender.ready().await.is_err() {
                // The server closed the connection between requests: reconnect.
                continue 'connect;
            }
            let request = match target.request() {
                Ok(request) => request,
                Err(message) => {
                    fail(&mut tally, Instant::now(), message);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let started = Instant::now();
            let outcome = tokio::time::timeout_at(
                window.end + GRACE,
                send(&mut sender, request, tally.wants_messages()),
            )
            .await;
            let finished = Instant::now();
            match outcome {
                Ok(Ok((answer, _))) => {
                    Live::add(&live.answered);
                    if window.contains(finished) {
                        record(&mut tally, &live, finished - started, answer);
                    }
                }
                Ok(Err(message)) => {
                    fail(&mut tally, finished.min(window.end), message);
                    continue 'connect;
                }
                Err(_) => {
                    fail(&mut tally, window.end, no_answer());
                    continue 'connect;
                }
            }
        }
    }
    tally
}

fn no_answer() -> String {
    format!(
        "no answer within {} s after the end of the run",
        GRACE.as_secs()
    )
}

/// An open-loop request that is due: when, whether it is measured, and its in-flight slot.
struct Due {
    at: Instant,
    measured: bool,
    _slot: OwnedSemaphorePermit,
}

/// Sets the flag when dropped: stops the scheduler thread when the run is dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Idle keep-alive connections of an open loop.
type Pool = Arc<Mutex<Vec<SendRequest<Full<Bytes>>>>>;

async fn open(
    target: Arc<Target>,
    rate: f64,
    max_in_flight: usize,
    window: Window,
    live: &Arc<Live>,
    meter: &mut Meter,
    progress: &mut dyn FnMut(&Snapshot),
) -> anyhow::Result<Tally> {
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let (due_tx, mut due_rx) = mpsc::unbounded_channel();
    let stop = Arc::new(AtomicBool::new(false));
    let _stop = StopOnDrop(stop.clone());
    {
        let live = live.clone();
        std::thread::Builder::new()
            .name("bench-schedule".into())
            .spawn(move || schedule(rate, window, &slots, &due_tx, &stop, &live))
            .context("cannot start the scheduler thread")?;
    }
    let pool: Pool = Arc::default();
    let mut requests = JoinSet::new();
    let mut tally = Tally::default();
    let mut ticker = ticker();
    let mut scheduling = true;
    while scheduling || !requests.is_empty() {
        tokio::select! {
            due = due_rx.recv(), if scheduling => match due {
                Some(due) => {
                    let want_detail = tally.wants_messages();
                    requests.spawn(one_request(target.clone(), pool.clone(), due, window, live.clone(), want_detail));
                }
                None => scheduling = false,
            },
            Some(joined) = requests.join_next(), if !requests.is_empty() => {
                let (measured, latency, outcome) = joined.context("a request task panicked")?;
                if measured {
                    match outcome {
                        Ok(answer) => record(&mut tally, live, latency, answer),
                        Err(message) => tally.record_error(|| message),
                    }
                }
            },
            _ = ticker.tick() => progress(&meter.snapshot(live)),
        }
    }
    tally.dropped = live.dropped.load(Ordering::Relaxed);
    Ok(tally)
}

/// The scheduler thread: hands each request to the runtime when it is due, or counts it as
/// dropped when `max_in_flight` requests are in flight.
fn schedule(
    rate: f64,
    window: Window,
    slots: &Arc<Semaphore>,
    due_tx: &mpsc::UnboundedSender<Due>,
    stop: &AtomicBool,
    live: &Live,
) {
    let start = window.start.into_std();
    let warmup = window.measure_from - window.start;
    let total = window.end - window.start;
    for i in 0.. {
        let offset = scheduled_at(i, rate);
        if offset >= total {
            break;
        }
        let at = start + offset;
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let now = std::time::Instant::now();
            if now >= at {
                break;
            }
            std::thread::sleep((at - now).min(MAX_SLEEP));
        }
        let measured = offset >= warmup;
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let due = Due {
                    at: Instant::from_std(at),
                    measured,
                    _slot: slot,
                };
                if due_tx.send(due).is_err() {
                    return;
                }
            }
            Err(TryAcquireError::NoPermits) => {
                if measured {
                    Live::add(&live.dropped);
                }
            }
            Err(TryAcquireError::Closed) => return,
        }
    }
}

/// Sends one open-loop request on an idle pooled connection (or a new one). Returns whether
/// it is measured, its latency from when it was due, and the answer or why there was none.
async fn one_request(
    target: Arc<Target>,
    pool: Pool,
    due: Due,
    window: Window,
    live: Arc<Live>,
    want_detail: bool,
) -> (bool, Duration, Result<Answer, String>) {
    let exchange = async {
        let mut sender = checkout(&target, &pool).await?;
        let request = target.request()?;
        let (answer, _) = send(&mut sender, request, want_detail).await?;
        pool.lock().expect("the pool lock").push(sender);
        Ok(answer)
    };
    let outcome = match tokio::time::timeout_at(window.end + GRACE, exchange).await {
        Ok(outcome) => outcome,
        Err(_) => Err(no_answer()),
    };
    let latency = due.at.elapsed();
    if outcome.is_ok() {
        Live::add(&live.answered);
    } else if due.measured {
        Live::add(&live.errors);
    }
    (due.measured, latency, outcome)
}

/// An idle connection that is still open, or a new one.
async fn checkout(target: &Target, pool: &Pool) -> Result<SendRequest<Full<Bytes>>, String> {
    loop {
        let idle = pool.lock().expect("the pool lock").pop();
        match idle {
            Some(mut sender) => {
                if sender.ready().await.is_ok() {
                    return Ok(sender);
                }
            }
            None => return target.connect().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_spaces_requests_evenly() {
        assert_eq!(scheduled_at(0, 50.0), Duration::ZERO);
        assert_eq!(scheduled_at(1, 50.0), Duration::from_millis(20));
        assert_eq!(scheduled_at(50, 50.0), Duration::from_secs(1));
        assert_eq!(scheduled_at(3, 0.5), Duration::from_secs(6));
    }

    #[test]
    fn the_schedule_counts_what_a_window_starts() {
        let s = Duration::from_secs;
        // 50/s for 1 s from 0: requests 0..50 (the one at exactly 1 s is the next window's).
        assert_eq!(scheduled_between(50.0, s(0), s(1)), 50);
        // A 2 s warm-up then 10 s at 100/s: 1000 measured, 200 warming up.
        assert_eq!(scheduled_between(100.0, s(2), s(12)), 1000);
        assert_eq!(scheduled_between(100.0, s(0), s(2)), 200);
        // 3/s for 1 s: at 0, 1/3 and 2/3.
        assert_eq!(scheduled_between(3.0, s(0), s(1)), 3);
        // The count agrees with the offsets themselves.
        for rate in [1.0, 3.0, 7.5, 50.0, 333.0] {
            let (from, to) = (Duration::from_millis(250), Duration::from_millis(1750));
            let by_offsets = (0..10_000)
                .map(|i| scheduled_at(i, rate))
                .filter(|t| *t >= from && *t < to)
                .count() as u64;
            assert_eq!(scheduled_between(rate, from, to), by_offsets, "rate {rate}");
        }
    }

    #[test]
    fn plans_that_cannot_run_are_refused() {
        let plan = |load, max_in_flight| Plan {
            load,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            max_in_flight,
        };
        assert!(plan(Load::Concurrency(1), 0).check().is_ok());
        assert!(plan(Load::Rate(0.5), 1).check().is_ok());
        for bad in [
            plan(Load::Concurrency(0), 1),
            plan(Load::Rate(0.0), 1),
            plan(Load::Rate(-1.0), 1),
            plan(Load::Rate(f64::NAN), 1),
            plan(Load::Rate(10.0), 0),
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn targets_are_parsed_and_headers_added() {
        let target = Target::new(
            "http://127.0.0.1:8080/endpoints/iris/invocations?x=1",
            "text/csv",
            "1,2",
        )
        .unwrap()
        .header("X-Test", " yes ")
        .unwrap()
        .with_hook(Arc::new(|body: &[u8]| {
            vec![("x-body-length".to_string(), body.len().to_string())]
        }));
        assert_eq!(target.authority(), "127.0.0.1:8080");
        assert_eq!(target.path_and_query(), "/endpoints/iris/invocations?x=1");
        let request = target.request().unwrap();
        assert_eq!(request.headers()["host"], "127.0.0.1:8080");
        assert_eq!(request.headers()["content-type"], "text/csv");
        assert_eq!(request.headers()["x-test"], "yes");
        assert_eq!(request.headers()["x-body-length"], "3");
        assert_eq!(
            Target::new("http://[::1]:9/", "a/b", "").unwrap().host,
            "::1"
        );
        assert_eq!(
            Target::new("http://localhost/", "a/b", "").unwrap().port,
            80
        );
        for bad in [
            "https://example.com/",
            "example.com",
            "http:///x",
            "not a url",
        ] {
            assert!(Target::new(bad, "text/csv", "").is_err(), "{bad}");
        }
        assert!(Target::new("http://h/", "bad\ntype", "").is_err());
        let bad_hook = Target::new("http://h/", "a/b", "")
            .unwrap()
            .with_hook(Arc::new(|_: &[u8]| vec![("bad name".into(), "v".into())]));
        assert!(bad_hook.request().unwrap_err().contains("bad header name"));
    }

    #[test]
    fn header_lines_are_split() {
        assert_eq!(
            parse_header("X-A: b: c").unwrap(),
            ("X-A".to_string(), "b: c".to_string())
        );
        assert!(parse_header("no colon").is_err());
    }

    #[test]
    fn non_2xx_answers_become_short_messages() {
        assert_eq!(describe_status(503, b""), "HTTP 503");
        assert_eq!(
            describe_status(
                400,
                b"{\"__type\": \"ValidationError\",\n \"message\": \"no\"}"
            ),
            "HTTP 400: {\"__type\": \"ValidationError\", \"message\": \"no\"}"
        );
        let long = "x".repeat(1000);
        let message = describe_status(500, long.as_bytes());
        assert!(message.ends_with('…'));
        assert_eq!(
            message.chars().count(),
            "HTTP 500: ".len() + MESSAGE_CHARS + 1
        );
    }

    #[test]
    fn snapshots_measure_the_recent_rate() {
        let start = Instant::now();
        let window = Window {
            start,
            measure_from: start + Duration::from_secs(3600),
            end: start + Duration::from_secs(7200),
        };
        let live = Live::default();
        let mut meter = Meter::new(window);
        let first = meter.snapshot(&live);
        assert!(first.warming_up);
        assert_eq!(first.rps, 0.0);
        assert_eq!(first.total, Duration::from_secs(7200));
        live.answered.store(100, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
        let second = meter.snapshot(&live);
        assert!(second.rps > 0.0 && second.rps <= 100.0 / 0.02, "{second:?}");
        assert_eq!(second.requests, 0);
    }
}
