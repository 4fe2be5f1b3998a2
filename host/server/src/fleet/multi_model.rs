//! Multi-model variants (`Mode: MultiModel`): the models under a variant's prefix (a local
//! directory or an `s3://` prefix), each loaded when a request first names it
//! (`TargetModel`) as a pool of its own over the variant's compiled component. One load per
//! model at a time: concurrent first requests wait for it, within their deadline. Loaded
//! models are kept under the variant's memory budget, the least recently used unloaded first
//! to make room and never one serving a request (`plinth_policy::model_cache`); a model
//! whose load failed is refused for a back-off before it is tried again. With
//! `ModelCacheSetting: Disabled` each request loads its model and unloads it after.

use crate::error::ApiError;
use crate::metrics::MultiModelMetrics;
use crate::state::artifacts;
use crate::state::remote::Remote;
use crate::state::Stored;
use axum::http::StatusCode;
use futures::future::{BoxFuture, FutureExt, Shared};
use plinth_policy::model_cache::{admit, check_target_model, retry_after, Admission, Resident};
use plinth_runtime::{LoadError, PoolTemplate, Runtime, VariantPool};
use plinth_storage::Location;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// Where a multi-model variant's models are.
#[derive(Debug, Clone)]
enum Prefix {
    Local(PathBuf),
    S3(Location),
}

/// What a multi-model variant is built from.
pub(crate) struct CacheSpec {
    pub(crate) endpoint: String,
    pub(crate) variant: String,
    /// `ModelDataUrl`: the prefix.
    pub(crate) prefix: String,
    /// `ModelCacheSetting: Enabled`.
    pub(crate) keep: bool,
    /// The bytes loaded models may take.
    pub(crate) budget: u64,
    /// Instances of each loaded model.
    pub(crate) instances: usize,
    /// How long a fetch from `s3://` may take.
    pub(crate) download_timeout: Duration,
    /// How long a request waits for its model to load (its invocation deadline).
    pub(crate) wait_timeout: Duration,
}

/// A multi-model variant's loaded models.
pub(crate) struct ModelCache {
    endpoint: String,
    variant: String,
    template: PoolTemplate,
    runtime: Arc<Runtime>,
    stored: Arc<Stored>,
    prefix: Prefix,
    /// The prefix as given, for messages.
    shown_prefix: String,
    keep: bool,
    budget: u64,
    instances: AtomicUsize,
    download_timeout: Duration,
    wait_timeout: Duration,
    state: Mutex<CacheState>,
    /// Told when a model stops serving a request or is unloaded: a load waiting for room
    /// looks again.
    released: tokio::sync::Notify,
    /// A count that orders uses (least recently used first).
    clock: AtomicU64,
    /// The largest size a loaded model of this variant has had: what a load reserves before
    /// it knows its own (the whole budget until the first load tells).
    typical: AtomicU64,
    metrics: MultiModelMetrics,
}

#[derive(Default)]
struct CacheState {
    models: HashMap<String, Entry>,
    /// Bytes held for loads in progress (and, without caching, for the models serving).
    reserved: u64,
}

type Loading = Shared<BoxFuture<'static, Result<Arc<LoadedModel>, LoadFailure>>>;

enum Entry {
    Loading(Loading),
    Loaded(Arc<LoadedModel>),
    /// The last load failed; refused until `until`.
    Failed {
        failure: LoadFailure,
        until: Instant,
        failures: u32,
    },
}

/// One loaded model.
pub(crate) struct LoadedModel {
    target: String,
    pool: Arc<VariantPool>,
    /// What it counts against the budget (measured again when its instances change).
    bytes: AtomicU64,
    download_time: Duration,
    load_time: Duration,
    loaded_at: SystemTime,
    hits: AtomicU64,
    /// The cache's clock at its last use.
    last_used: AtomicU64,
    /// When it last served, in milliseconds since the epoch.
    last_used_ms: AtomicU64,
    /// Requests holding it now.
    in_use: AtomicUsize,
    /// Loaded and not taken yet: the requests that waited for it are about to, so it is
    /// not unloaded (for up to a request's deadline after `loaded`).
    fresh: std::sync::atomic::AtomicBool,
    loaded: Instant,
}

/// What `plinth models` shows of a loaded model.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ModelSummary {
    pub(crate) target_model: String,
    pub(crate) size_in_bytes: u64,
    pub(crate) instances: usize,
    pub(crate) download_time_in_ms: f64,
    pub(crate) load_time_in_ms: f64,
    pub(crate) loaded_at: f64,
    pub(crate) last_used: f64,
    pub(crate) hits: u64,
    pub(crate) in_use: usize,
}

/// Why a model could not be loaded.
#[derive(Debug, Clone)]
pub(crate) struct LoadFailure {
    kind: FailureKind,
    message: Arc<str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailureKind {
    /// Nothing at `<prefix>/<TargetModel>`.
    NotFound,
    /// Fetching, unpacking or `model_fn` failed.
    Load,
    /// Larger than the variant's whole budget.
    TooLarge,
    /// No room within the wait: every loaded model was serving.
    NoRoom,
}

impl FailureKind {
    /// Whether the failure is kept for a back-off: the model's own (it cannot be unpacked,
    /// its `model_fn` fails, it is larger than the budget). A model not found is looked for
    /// again by the next request (it may have been uploaded since; and names that match
    /// nothing leave nothing behind), and no room is a moment's state of the cache.
    fn kept(self) -> bool {
        matches!(self, Self::Load | Self::TooLarge)
    }
}

impl LoadFailure {
    fn new(kind: FailureKind, message: impl Into<Arc<str>>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The answer to a request for the model.
    fn api_error(&self, retry_in: Option<Duration>) -> ApiError {
        let again = retry_in
            .map(|d| format!(" It is tried again in {:.1} s.", d.as_secs_f64()))
            .unwrap_or_default();
        match self.kind {
            FailureKind::NotFound => ApiError::validation(self.message.to_string()),
            FailureKind::Load => ApiError::new(
                StatusCode::FAILED_DEPENDENCY,
                "ModelError",
                format!("{}{again}", self.message),
            ),
            FailureKind::TooLarge | FailureKind::NoRoom => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                self.message.to_string(),
            ),
        }
    }
}

/// A request's hold on a loaded model: while it is held the model is not unloaded.
pub(crate) struct Lease {
    /// `None` only while it is dropped.
    model: Option<Arc<LoadedModel>>,
    cache: Arc<ModelCache>,
    /// Without caching: the room reserved for this request's own copy, given back with it.
    owned: Option<Reservation>,
}

impl std::ops::Deref for Lease {
    type Target = VariantPool;
    fn deref(&self) -> &VariantPool {
        &self.model.as_ref().expect("a lease holds its model").pool
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(model) = self.model.take() else {
            return;
        };
        let idle = model.in_use.fetch_sub(1, Ordering::SeqCst) == 1;
        if let Some(reservation) = self.owned.take() {
            // This request's own copy: unloaded with it, then its room given back.
            self.cache.dispose(vec![model]);
            drop(reservation);
        } else if idle {
            // A load waiting for room may unload it now.
            self.cache.released.notify_waiters();
        }
    }
}

/// Bytes held in the cache's reservation for a load, given back when dropped: a load that
/// fails, or is cancelled at any point, gives its room back.
struct Reservation {
    cache: Arc<ModelCache>,
    bytes: u64,
}

impl Reservation {
    /// Hold `bytes` instead (the state is locked by the caller).
    fn resize(&mut self, state: &mut CacheState, bytes: u64) {
        state.reserved = state.reserved - self.bytes + bytes;
        self.bytes = bytes;
    }

    /// The bytes become a loaded model's own (the state is locked by the caller).
    fn settle(mut self, state: &mut CacheState) {
        state.reserved -= self.bytes;
        self.bytes = 0;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.cache.lock().reserved -= self.bytes;
            self.cache.released.notify_waiters();
        }
    }
}

/// Clears a load's `Loading` entry if its task ends without replacing it (a panic), so the
/// next request loads again instead of finding the failed load forever.
struct LoadTask {
    cache: Arc<ModelCache>,
    target: String,
    done: bool,
}

impl Drop for LoadTask {
    fn drop(&mut self) {
        if !self.done {
            let mut state = self.cache.lock();
            if matches!(state.models.get(&self.target), Some(Entry::Loading(_))) {
                state.models.remove(&self.target);
            }
            drop(state);
            self.cache.released.notify_waiters();
        }
    }
}

/// How often a load waiting for room looks again, whatever it was told: room also appears
/// when a just-loaded model nobody took stops being held, and instances free up when other
/// endpoints let theirs go.
const RECHECK: Duration = Duration::from_millis(50);

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The host's memory in bytes (`MemTotal` of `/proc/meminfo`; 0 where it cannot be read).
pub(crate) fn host_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0)
}

impl ModelCache {
    /// A cache over `spec.prefix` with no model loaded, serving with `template`.
    pub(crate) fn new(
        spec: CacheSpec,
        template: PoolTemplate,
        runtime: Arc<Runtime>,
        stored: Arc<Stored>,
        metrics: MultiModelMetrics,
    ) -> Result<Self, String> {
        let prefix = if spec.prefix.starts_with("s3://") {
            Prefix::S3(Location::parse(&spec.prefix).map_err(|e| format!("ModelDataUrl {e}"))?)
        } else {
            let dir = artifacts::local_path("ModelDataUrl", &spec.prefix)?
                .canonicalize()
                .map_err(|e| format!("ModelDataUrl {:?}: {e}", spec.prefix))?;
            if !dir.is_dir() {
                return Err(format!(
                    "ModelDataUrl {:?}: the prefix of a multi-model model must be a directory",
                    spec.prefix
                ));
            }
            Prefix::Local(dir)
        };
        Ok(Self {
            endpoint: spec.endpoint,
            variant: spec.variant,
            template,
            runtime,
            stored,
            prefix,
            shown_prefix: spec.prefix,
            keep: spec.keep,
            budget: spec.budget,
            instances: AtomicUsize::new(spec.instances),
            download_timeout: spec.download_timeout,
            wait_timeout: spec.wait_timeout,
            state: Mutex::default(),
            released: tokio::sync::Notify::new(),
            clock: AtomicU64::new(0),
            typical: AtomicU64::new(0),
            metrics,
        })
    }

    fn lock(&self) -> MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The compiled component's settings.
    pub(crate) fn template(&self) -> &PoolTemplate {
        &self.template
    }

    /// Instances of each loaded model.
    pub(crate) fn instances(&self) -> usize {
        self.instances.load(Ordering::SeqCst)
    }

    /// The budget, in bytes.
    pub(crate) fn budget(&self) -> u64 {
        self.budget
    }

    /// Change the instances of each loaded model, and of those loaded later.
    pub(crate) async fn resize(&self, count: usize) -> Result<(), plinth_runtime::LoadError> {
        self.instances.store(count, Ordering::SeqCst);
        for model in self.loaded() {
            model.pool.resize(count).await?;
            // What it takes now: more instances hold more.
            let bytes = model.pool.memory_bytes() as u64;
            model.bytes.store(bytes, Ordering::SeqCst);
            self.typical
                .fetch_max(bytes.min(self.budget), Ordering::SeqCst);
        }
        // Back within the budget, as far as idle models allow.
        let unloaded = self.unload_for(&mut self.lock(), 0);
        self.dispose(unloaded);
        Ok(())
    }

    fn loaded(&self) -> Vec<Arc<LoadedModel>> {
        self.lock()
            .models
            .values()
            .filter_map(|e| match e {
                Entry::Loaded(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    /// The pools of the loaded models.
    pub(crate) fn pools(&self) -> Vec<Arc<VariantPool>> {
        self.loaded().into_iter().map(|m| m.pool.clone()).collect()
    }

    /// Loaded models and the bytes they take.
    pub(crate) fn usage(&self) -> (usize, u64) {
        let state = self.lock();
        let mut count = 0;
        let mut bytes = state.reserved;
        for entry in state.models.values() {
            if let Entry::Loaded(m) = entry {
                count += 1;
                bytes += m.bytes.load(Ordering::Relaxed);
            }
        }
        (count, bytes)
    }

    /// The loaded models, most recently used first.
    pub(crate) fn summaries(&self) -> Vec<ModelSummary> {
        let mut models = self.loaded();
        models.sort_by_key(|m| std::cmp::Reverse(m.last_used.load(Ordering::Relaxed)));
        models
            .iter()
            .map(|m| ModelSummary {
                target_model: m.target.clone(),
                size_in_bytes: m.bytes.load(Ordering::Relaxed),
                instances: m.pool.instances(),
                download_time_in_ms: m.download_time.as_secs_f64() * 1e3,
                load_time_in_ms: m.load_time.as_secs_f64() * 1e3,
                loaded_at: epoch_ms(m.loaded_at) as f64 / 1e3,
                last_used: m.last_used_ms.load(Ordering::Relaxed) as f64 / 1e3,
                hits: m.hits.load(Ordering::Relaxed),
                in_use: m.in_use.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// The `n` loaded models with the most requests, and their counts.
    pub(crate) fn hottest(&self, n: usize) -> Vec<(String, u64)> {
        let mut hits: Vec<(String, u64)> = self
            .loaded()
            .iter()
            .map(|m| (m.target.clone(), m.hits.load(Ordering::Relaxed)))
            .collect();
        hits.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        hits.truncate(n);
        hits
    }

    /// Hold `model` for one request (under the state's lock).
    fn take(self: &Arc<Self>, model: &Arc<LoadedModel>) -> Lease {
        model.in_use.fetch_add(1, Ordering::SeqCst);
        model.fresh.store(false, Ordering::SeqCst);
        model.hits.fetch_add(1, Ordering::Relaxed);
        model.last_used.store(
            self.clock.fetch_add(1, Ordering::Relaxed) + 1,
            Ordering::Relaxed,
        );
        model
            .last_used_ms
            .store(epoch_ms(SystemTime::now()), Ordering::Relaxed);
        Lease {
            model: Some(model.clone()),
            cache: self.clone(),
            owned: None,
        }
    }

    /// The model `target` names, loaded if it is not (waiting for a load in progress), held
    /// for one request. A request waits at most its deadline: past it, the load goes on and
    /// the request is answered `ModelNotReadyException`.
    pub(crate) async fn lease(self: &Arc<Self>, target: &str) -> Result<Lease, ApiError> {
        check_target_model(target)
            .map_err(|e| ApiError::validation(format!("TargetModel {target:?} {e}")))?;
        if !self.keep {
            return self.lease_uncached(target).await;
        }
        let started = Instant::now();
        // A model loaded and unloaded again before this request took it is loaded again,
        // within the request's deadline.
        while started.elapsed() < self.wait_timeout {
            let loading = {
                let mut state = self.lock();
                match state.models.get(target) {
                    Some(Entry::Loaded(model)) => {
                        let lease = self.take(model);
                        self.metrics.hits.inc();
                        return Ok(lease);
                    }
                    Some(Entry::Loading(loading)) => loading.clone(),
                    Some(Entry::Failed { failure, until, .. }) if Instant::now() < *until => {
                        return Err(failure.api_error(Some(*until - Instant::now())));
                    }
                    other => {
                        let failures = match other {
                            Some(Entry::Failed { failures, .. }) => *failures,
                            _ => 0,
                        };
                        let loading = self.clone().start_load(target.to_owned(), failures);
                        state
                            .models
                            .insert(target.to_owned(), Entry::Loading(loading.clone()));
                        loading
                    }
                }
            };
            self.metrics.misses.inc();
            let remaining = self.wait_timeout.saturating_sub(started.elapsed());
            let loaded = match tokio::time::timeout(remaining, loading).await {
                Err(_) => return Err(self.not_ready(target)),
                Ok(result) => result.map_err(|f| f.api_error(None))?,
            };
            let state = self.lock();
            if let Some(Entry::Loaded(model)) = state.models.get(target) {
                if Arc::ptr_eq(model, &loaded) {
                    let lease = self.take(model);
                    drop(state);
                    self.metrics
                        .loading_wait
                        .observe(started.elapsed().as_secs_f64());
                    return Ok(lease);
                }
            }
        }
        Err(self.not_ready(target))
    }

    fn not_ready(&self, target: &str) -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "ModelNotReadyException",
            format!(
                "Model {target} of endpoint {} is still loading; retry the request.",
                self.endpoint
            ),
        )
    }

    /// Start loading `target` on a task of its own (a request that goes away does not stop
    /// it); its end replaces the cache's entry.
    fn start_load(self: Arc<Self>, target: String, failures: u32) -> Loading {
        let task = tokio::spawn(async move {
            let mut guard = LoadTask {
                cache: self.clone(),
                target: target.clone(),
                done: false,
            };
            let result = self.load(&target).await;
            let mut state = self.lock();
            guard.done = true;
            let result = result.map(|(model, reservation)| {
                reservation.settle(&mut state);
                let model = Arc::new(model);
                state
                    .models
                    .insert(target.clone(), Entry::Loaded(model.clone()));
                model
            });
            match &result {
                Ok(_) => {}
                Err(failure) if !failure.kind.kept() => {
                    // Not the model's fault: the next request tries again.
                    state.models.remove(&target);
                }
                Err(failure) => {
                    let failures = failures + 1;
                    let wait = retry_after(failures);
                    tracing::warn!(
                        endpoint = %self.endpoint,
                        variant = %self.variant,
                        target_model = %target,
                        failures,
                        retry_in_s = wait.as_secs_f64(),
                        error = %failure.message,
                        "model not loaded"
                    );
                    state.models.insert(
                        target.clone(),
                        Entry::Failed {
                            failure: failure.clone(),
                            until: Instant::now() + wait,
                            failures,
                        },
                    );
                }
            }
            drop(state);
            self.released.notify_waiters();
            result
        });
        async move {
            task.await.unwrap_or_else(|e| {
                Err(LoadFailure::new(
                    FailureKind::Load,
                    format!("the load task failed: {e}"),
                ))
            })
        }
        .boxed()
        .shared()
    }

    /// Without caching: a copy of the model for this request alone.
    async fn lease_uncached(self: &Arc<Self>, target: &str) -> Result<Lease, ApiError> {
        let started = Instant::now();
        self.metrics.misses.inc();
        let (model, reservation) =
            match tokio::time::timeout(self.wait_timeout, self.load(target)).await {
                Err(_) => return Err(self.not_ready(target)),
                Ok(result) => result.map_err(|f| f.api_error(None))?,
            };
        let mut lease = self.take(&Arc::new(model));
        lease.owned = Some(reservation);
        self.metrics
            .loading_wait
            .observe(started.elapsed().as_secs_f64());
        Ok(lease)
    }

    /// Fetch, make room for and load `target`: the model, and the room it holds (its bytes,
    /// reserved until the caller makes them the model's own).
    async fn load(
        self: &Arc<Self>,
        target: &str,
    ) -> Result<(LoadedModel, Reservation), LoadFailure> {
        let started = Instant::now();
        let dir = self.fetch(target).await?;
        let download_time = started.elapsed();
        self.metrics
            .downloading
            .observe(download_time.as_secs_f64());
        let mut reservation = self.make_room(target).await?;
        let loading = Instant::now();
        let deadline = loading + self.wait_timeout;
        let pool = loop {
            // Every instance the runtime has room for may be taken (by this variant's
            // loaded models among others): an idle model of this variant gives its up.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let failed = |kind, e: String| {
                LoadFailure::new(
                    kind,
                    format!(
                        "Model {target} of endpoint {} could not be loaded: {e}",
                        self.endpoint
                    ),
                )
            };
            match self
                .template
                .pool(&self.runtime, Some(dir.clone()), self.instances())
                .await
            {
                Ok(pool) => break Arc::new(pool),
                Err(LoadError::NoInstanceSlot(e)) => {
                    if let Some(idle) = self.unload_least_recent() {
                        self.dispose(vec![idle]);
                        continue;
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(failed(FailureKind::NoRoom, e));
                    }
                    let _ = tokio::time::timeout(RECHECK.min(deadline - now), released).await;
                }
                Err(e) => return Err(failed(FailureKind::Load, e.to_string())),
            }
        };
        let load_time = loading.elapsed();
        self.metrics.loading.observe(load_time.as_secs_f64());
        let bytes = pool.memory_bytes() as u64;
        if bytes > self.budget {
            return Err(LoadFailure::new(
                FailureKind::TooLarge,
                format!(
                    "Model {target} takes {} MiB loaded, more than variant {}'s model cache of \
                     {} MiB (PlinthModelCacheSizeInMB)",
                    bytes.div_ceil(1 << 20),
                    self.variant,
                    self.budget >> 20
                ),
            ));
        }
        self.typical.fetch_max(bytes, Ordering::SeqCst);
        // The reservation becomes the model's own size; past the budget, idle models make
        // room for the difference (if every one is serving, the cache is over its budget by
        // that difference until one is done).
        let unloaded = {
            let mut state = self.lock();
            reservation.resize(&mut state, 0);
            let unloaded = self.unload_for(&mut state, bytes);
            reservation.resize(&mut state, bytes);
            unloaded
        };
        self.dispose(unloaded);
        tracing::info!(
            endpoint = %self.endpoint,
            variant = %self.variant,
            target_model = %target,
            bytes,
            download_ms = download_time.as_secs_f64() * 1e3,
            load_ms = load_time.as_secs_f64() * 1e3,
            "model loaded"
        );
        let model = LoadedModel {
            target: target.to_owned(),
            pool,
            bytes: AtomicU64::new(bytes),
            download_time,
            load_time,
            loaded_at: SystemTime::now(),
            hits: AtomicU64::new(0),
            last_used: AtomicU64::new(0),
            last_used_ms: AtomicU64::new(0),
            in_use: AtomicUsize::new(0),
            fresh: true.into(),
            loaded: Instant::now(),
        };
        Ok((model, reservation))
    }

    /// The local directory of `target`: a directory under a local prefix as it is, an
    /// archive unpacked into the artifact cache, an `s3://` object fetched (once per object
    /// version) and unpacked.
    async fn fetch(&self, target: &str) -> Result<PathBuf, LoadFailure> {
        let missing = || {
            LoadFailure::new(
                FailureKind::NotFound,
                format!(
                    "Could not find model {target} under ModelDataUrl {} of endpoint {}.",
                    self.shown_prefix, self.endpoint
                ),
            )
        };
        let failed = |e: String| {
            LoadFailure::new(
                FailureKind::Load,
                format!("Model {target} could not be fetched: {e}"),
            )
        };
        match &self.prefix {
            Prefix::Local(dir) => {
                // Links are followed, but only to what stays inside the prefix.
                let path = dir.join(target).canonicalize().map_err(|_| missing())?;
                if !path.starts_with(dir) {
                    return Err(LoadFailure::new(
                        FailureKind::NotFound,
                        format!(
                            "TargetModel {target:?} leads outside ModelDataUrl {} through a \
                             link; a model must lie under its prefix.",
                            self.shown_prefix
                        ),
                    ));
                }
                let cache = self.stored.artifacts.join(artifacts::MULTI_MODEL_DIR);
                tokio::task::spawn_blocking(move || {
                    let metadata = std::fs::metadata(&path).map_err(|e| e.to_string())?;
                    if metadata.is_dir() {
                        // Used in place: regular files only, within the artifact cap.
                        artifacts::check_model_dir(&path)?;
                        return Ok(path);
                    }
                    artifacts::resolve(&cache, &path.to_string_lossy())
                })
                .await
                .map_err(|e| failed(e.to_string()))?
                .map_err(failed)
            }
            Prefix::S3(prefix) => {
                let location = prefix.join(target);
                let remote = Remote::Object {
                    location: location.clone(),
                    packing: artifacts::Packing::Auto,
                };
                match self
                    .stored
                    .remote
                    .local(&remote, self.download_timeout, None)
                    .await
                {
                    Ok(path) => Ok(path),
                    Err(_) if self.stored.remote.is_missing(&location).await => Err(missing()),
                    Err(e) => Err(failed(e)),
                }
            }
        }
    }

    /// Reserve room for a model about to load, unloading idle models as needed: the
    /// largest size a model of this variant has had (the whole budget for the first load,
    /// so that it loads alone). Waits (within a request's deadline) while only models in use
    /// could make room.
    async fn make_room(self: &Arc<Self>, target: &str) -> Result<Reservation, LoadFailure> {
        let deadline = Instant::now() + self.wait_timeout;
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let typical = self.typical.load(Ordering::SeqCst);
            let wanted = if typical == 0 {
                self.budget
            } else {
                typical.min(self.budget)
            };
            let reserved = {
                let mut state = self.lock();
                match self.admission(&state, wanted).0 {
                    Admission::Fits { .. } => {
                        let unloaded = self.unload_for(&mut state, wanted);
                        state.reserved += wanted;
                        Some(unloaded)
                    }
                    Admission::TooLarge => {
                        return Err(LoadFailure::new(
                            FailureKind::TooLarge,
                            format!(
                                "Model {target} needs {} MiB, more than variant {}'s model \
                                 cache of {} MiB (PlinthModelCacheSizeInMB)",
                                wanted >> 20,
                                self.variant,
                                self.budget >> 20
                            ),
                        ))
                    }
                    Admission::Wait => None,
                }
            };
            if let Some(unloaded) = reserved {
                self.dispose(unloaded);
                return Ok(Reservation {
                    cache: self.clone(),
                    bytes: wanted,
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(LoadFailure::new(
                    FailureKind::NoRoom,
                    format!(
                        "No room to load model {target}: variant {}'s model cache of {} MiB is \
                         held by models serving requests; retry the request.",
                        self.variant,
                        self.budget >> 20
                    ),
                ));
            }
            let _ = tokio::time::timeout(RECHECK.min(deadline - now), released).await;
        }
    }

    /// The policy's view of the loaded models, and its decision for `wanted` bytes.
    fn admission(&self, state: &CacheState, wanted: u64) -> (Admission, Vec<String>) {
        let mut names = Vec::new();
        let mut resident = Vec::new();
        for (name, entry) in &state.models {
            if let Entry::Loaded(m) = entry {
                names.push(name.clone());
                resident.push(Resident {
                    bytes: m.bytes.load(Ordering::Relaxed),
                    last_used: m.last_used.load(Ordering::Relaxed),
                    in_use: self.busy(m),
                });
            }
        }
        (admit(&resident, state.reserved, self.budget, wanted), names)
    }

    /// Take the least recently used idle model out of the cache, if there is one.
    fn unload_least_recent(&self) -> Option<Arc<LoadedModel>> {
        let mut state = self.lock();
        let name = state
            .models
            .iter()
            .filter_map(|(name, entry)| match entry {
                Entry::Loaded(m) if !self.busy(m) => {
                    Some((m.last_used.load(Ordering::Relaxed), name))
                }
                _ => None,
            })
            .min()?
            .1
            .clone();
        match state.models.remove(&name) {
            Some(Entry::Loaded(m)) => Some(m),
            _ => None,
        }
    }

    /// Whether `model` may not be unloaded now: it serves a request, or it was just loaded
    /// and the requests that waited for it have not taken it yet.
    fn busy(&self, model: &LoadedModel) -> bool {
        model.in_use.load(Ordering::SeqCst) > 0
            || (model.fresh.load(Ordering::SeqCst) && model.loaded.elapsed() < self.wait_timeout)
    }

    /// Take out of the cache the idle models that make room for `wanted` bytes (as many as
    /// the policy says; none when they are in use). They are dropped by [`Self::dispose`],
    /// outside the lock.
    fn unload_for(&self, state: &mut CacheState, wanted: u64) -> Vec<Arc<LoadedModel>> {
        let (admission, names) = self.admission(state, wanted);
        let Admission::Fits { unload } = admission else {
            return Vec::new();
        };
        unload
            .into_iter()
            .filter_map(|i| match state.models.remove(&names[i]) {
                Some(Entry::Loaded(m)) => Some(m),
                _ => None,
            })
            .collect()
    }

    /// Drop unloaded models (their pools and instances), timing it.
    fn dispose(&self, models: Vec<Arc<LoadedModel>>) {
        for model in models {
            let started = Instant::now();
            tracing::debug!(
                endpoint = %self.endpoint,
                variant = %self.variant,
                target_model = %model.target,
                "model unloaded"
            );
            drop(model);
            self.metrics
                .unloading
                .observe(started.elapsed().as_secs_f64());
        }
        self.released.notify_waiters();
    }
}
