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
use plinth_policy::model_cache::{admit, retry_after, target_model_path, Admission, Resident};
use plinth_runtime::{PoolTemplate, Runtime, VariantPool};
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
    bytes: u64,
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
    /// Without caching: the bytes reserved for this request's own copy, released with it.
    owned: Option<u64>,
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
        model.in_use.fetch_sub(1, Ordering::SeqCst);
        if let Some(bytes) = self.owned {
            // This request's own copy: unloaded with it.
            self.cache.dispose(vec![model]);
            self.cache.lock().reserved -= bytes;
        }
        self.cache.released.notify_waiters();
    }
}

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
            let dir = artifacts::local_path("ModelDataUrl", &spec.prefix)?;
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
        }
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
                bytes += m.bytes;
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
                size_in_bytes: m.bytes,
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
        target_model_path(target)
            .map_err(|e| ApiError::validation(format!("TargetModel {target:?} {e}")))?;
        if !self.keep {
            return self.lease_uncached(target).await;
        }
        let started = Instant::now();
        // A model loaded and unloaded again before this request took it is loaded again:
        // a few rounds at most.
        for _ in 0..3 {
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
            let result = self.load(&target).await.map(Arc::new);
            let mut state = self.lock();
            match &result {
                Ok(model) => {
                    state.reserved -= model.bytes;
                    state
                        .models
                        .insert(target.clone(), Entry::Loaded(model.clone()));
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
        let model = match tokio::time::timeout(self.wait_timeout, self.load(target)).await {
            Err(_) => return Err(self.not_ready(target)),
            Ok(result) => Arc::new(result.map_err(|f| f.api_error(None))?),
        };
        let reserved = model.bytes;
        let mut lease = self.take(&model);
        lease.owned = Some(reserved);
        self.metrics
            .loading_wait
            .observe(started.elapsed().as_secs_f64());
        Ok(lease)
    }

    /// Fetch, make room for and load `target`. On success the model's bytes are counted
    /// in the state's reservation (the caller moves them to the model).
    async fn load(&self, target: &str) -> Result<LoadedModel, LoadFailure> {
        let started = Instant::now();
        let dir = self.fetch(target).await?;
        let download_time = started.elapsed();
        self.metrics
            .downloading
            .observe(download_time.as_secs_f64());
        let estimate = self.make_room(target).await?;
        let loading = Instant::now();
        let template = &self.template;
        let runtime = self.runtime.clone();
        let instances = self.instances();
        let built = template.pool(&runtime, Some(dir), instances).await;
        let load_time = loading.elapsed();
        let pool = match built {
            Ok(pool) => Arc::new(pool),
            Err(e) => {
                self.lock().reserved -= estimate;
                self.released.notify_waiters();
                return Err(LoadFailure::new(
                    FailureKind::Load,
                    format!(
                        "Model {target} of endpoint {} could not be loaded: {e}",
                        self.endpoint
                    ),
                ));
            }
        };
        self.metrics.loading.observe(load_time.as_secs_f64());
        let bytes = pool.memory_bytes() as u64;
        self.typical.fetch_max(bytes, Ordering::SeqCst);
        // The reservation becomes the model's own size; past the budget, idle models make
        // room for the difference.
        let unloaded = {
            let mut state = self.lock();
            state.reserved -= estimate;
            if bytes > self.budget {
                drop(state);
                self.released.notify_waiters();
                return Err(LoadFailure::new(
                    FailureKind::TooLarge,
                    format!(
                        "Model {target} takes {} MiB loaded, more than variant {}'s model cache \
                         of {} MiB (PlinthModelCacheSizeInMB)",
                        bytes >> 20,
                        self.variant,
                        self.budget >> 20
                    ),
                ));
            }
            let unloaded = self.unload_for(&mut state, bytes);
            state.reserved += bytes;
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
        Ok(LoadedModel {
            target: target.to_owned(),
            pool,
            bytes,
            download_time,
            load_time,
            loaded_at: SystemTime::now(),
            hits: AtomicU64::new(0),
            last_used: AtomicU64::new(0),
            last_used_ms: AtomicU64::new(0),
            in_use: AtomicUsize::new(0),
            fresh: true.into(),
            loaded: Instant::now(),
        })
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
                let path = dir.join(target);
                let metadata = std::fs::symlink_metadata(&path).map_err(|_| missing())?;
                if metadata.is_dir() {
                    return Ok(path);
                }
                if !metadata.is_file() {
                    return Err(missing());
                }
                let cache = self.stored.artifacts.join(artifacts::MULTI_MODEL_DIR);
                let url = path.to_string_lossy().into_owned();
                tokio::task::spawn_blocking(move || artifacts::resolve(&cache, &url))
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

    /// Reserve room for a model about to load, unloading idle models as needed, and give
    /// the bytes reserved: the largest size a model of this variant has had (the whole
    /// budget for the first load, so that it loads alone). Waits (within the longer of the
    /// request deadline and the download timeout) while only models in use could make room.
    async fn make_room(&self, target: &str) -> Result<u64, LoadFailure> {
        let deadline = Instant::now() + self.wait_timeout.max(self.download_timeout);
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let typical = self.typical.load(Ordering::SeqCst);
            let wanted = if typical == 0 { self.budget } else { typical };
            let unloaded = {
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
            if let Some(unloaded) = unloaded {
                self.dispose(unloaded);
                return Ok(wanted);
            }
            if tokio::time::timeout_at(deadline.into(), released)
                .await
                .is_err()
            {
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
                    bytes: m.bytes,
                    last_used: m.last_used.load(Ordering::Relaxed),
                    in_use: m.in_use.load(Ordering::SeqCst) > 0
                        || (m.fresh.load(Ordering::SeqCst)
                            && m.loaded.elapsed() < self.wait_timeout),
                });
            }
        }
        (admit(&resident, state.reserved, self.budget, wanted), names)
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
