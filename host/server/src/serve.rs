//! Startup: `plinth serve` opens the data directory's store, starts restoring the stored
//! endpoints in the background (each on its own: none waits for another, and the server
//! does not wait for them), applies a deployment file in process (through the same
//! operations as the API), starts the background upkeep and listens under the connection
//! limits (`http::listen`) until SIGTERM or Ctrl-C, then drains the requests in flight and
//! writes the experiments' ledger one last time. [`start`] is the same
//! minus the listening, for embedding the server (and for the in-process API tests). The
//! ONNX Runtime library is found, loaded and checked here too: a missing or incompatible one
//! stops the server with a message naming the path and the problem.

use crate::apply::{self, Control};
use crate::fleet::ledger::Experiments;
use crate::fleet::Fleet;
use crate::http::listen::Limits;
use crate::http::Server;
use crate::sigv4::Verifier;
use crate::state::catalog::Catalog;
use crate::state::metric_store::MetricStore;
use crate::state::queue::Queue;
use crate::state::store::Store;
use crate::state::Stored;
use anyhow::{anyhow, bail, Context};
use clap::Args;
use plinth_policy::config;
use plinth_policy::deployment_file::{self, DeploymentFile};
use plinth_runtime::{OnnxRuntime, Runtime, RuntimeConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What `plinth serve` is told.
pub struct ServeOptions {
    /// A deployment file to apply at start.
    pub config: Option<PathBuf>,
    /// Where to listen.
    pub bind: SocketAddr,
    /// The store, compiled components and unpacked artifacts.
    pub data_dir: PathBuf,
    /// Access keys; with them every request must be signed.
    pub credentials: Option<PathBuf>,
    /// Where ONNX Runtime is and how it runs.
    pub onnxruntime: OnnxRuntimeArgs,
    /// Connection limits and the shutdown's drain deadline.
    pub http: HttpArgs,
    /// HTTPS.
    pub tls: TlsArgs,
    /// The directories models' files may come from (`--artifact-root`); none given: the
    /// working directory. A deployment file's directory is added for it.
    pub artifact_roots: Vec<PathBuf>,
    /// An S3-compatible endpoint for `s3://` locations (`--s3-endpoint-url`), over
    /// `AWS_ENDPOINT_URL_S3` and the rest.
    pub s3_endpoint_url: Option<String>,
    /// Wasm instances reserved room for (`--max-instances`): the server's instance limit.
    pub max_instances: u32,
    /// The length of Application Auto Scaling's minute (`--autoscaling-minute`).
    pub autoscaling_minute: Duration,
    /// How long a data capture file stays open (`--data-capture-roll-seconds`).
    pub data_capture_roll: Duration,
    /// The metric store's resolutions and retention (`--metric-retention`); none: no store.
    pub metric_retention: Vec<plinth_policy::metric_data::Tier>,
}

/// Where the state lives.
pub enum StateLocation {
    /// `<dir>/plinth.db`, `<dir>/compiled`, `<dir>/artifacts`: what `plinth serve` uses.
    Directory(PathBuf),
    /// A database in memory (gone when the process ends), with artifacts unpacked under the
    /// given directory and components compiled afresh: for tests and embedding.
    InMemory {
        /// Where `.tar.gz` artifacts are unpacked.
        artifacts: PathBuf,
    },
}

/// The artifact roots of `plinth serve`: those given, or the working directory; and the
/// deployment file's directory, for the files it names.
fn artifact_roots(given: Vec<PathBuf>, config: Option<&Path>) -> anyhow::Result<Vec<PathBuf>> {
    let mut roots = given;
    if roots.is_empty() {
        roots.push(std::env::current_dir().context("cannot read the working directory")?);
    }
    if let Some(config) = config {
        let dir = config.parent().filter(|d| !d.as_os_str().is_empty());
        roots.push(dir.map_or_else(|| PathBuf::from("."), Path::to_path_buf));
    }
    tracing::info!(
        ?roots,
        "models' Image and ModelDataUrl must be under these directories"
    );
    Ok(roots)
}

/// What the HTTP layer is started with besides the state.
pub struct Settings {
    /// The Wasm runtime's settings (ONNX Runtime, instance limits...).
    pub runtime: RuntimeConfig,
    /// The largest InvokeEndpoint body.
    pub max_payload_bytes: usize,
    /// A credentials file (TOML access keys): with one, every request must be signed.
    pub credentials: Option<PathBuf>,
    /// How long a request body may take to arrive ([`Limits::body_read_timeout`]).
    pub body_read_timeout: Duration,
    /// The directories a model's `Image` and `ModelDataUrl` must be under; `None` (the
    /// default, for embedding): anywhere.
    pub artifact_roots: Option<Vec<PathBuf>>,
    /// How `s3://` locations are reached (default: no credentials, AWS's endpoints).
    pub s3: plinth_storage::S3Settings,
    /// The length of Application Auto Scaling's minute (default 60 s; shorter compresses
    /// scaling's time for tests and demos).
    pub autoscaling_minute: Duration,
    /// How long a data capture file stays open before it is written (default a minute).
    pub data_capture_roll: Duration,
    /// The metric store's resolutions and how long each is kept (default CloudWatch's);
    /// none: no metrics are stored.
    pub metric_retention: Vec<plinth_policy::metric_data::Tier>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            runtime: RuntimeConfig::default(),
            max_payload_bytes: config::DEFAULT_MAX_PAYLOAD_BYTES,
            credentials: None,
            body_read_timeout: Limits::DEFAULT_BODY_READ_TIMEOUT,
            artifact_roots: None,
            s3: plinth_storage::S3Settings::default(),
            autoscaling_minute: Duration::from_secs(60),
            data_capture_roll: plinth_policy::data_capture::ROLL_AFTER,
            metric_retention: plinth_policy::metric_data::parse_retention(
                plinth_policy::metric_data::DEFAULT_RETENTION,
            )
            .expect("the default retention parses"),
        }
    }
}

/// Open the state, start bringing back the stored endpoints (in the background: each is
/// `Creating` until it serves, then `InService`, or `Failed`) and start the background
/// upkeep: everything but listening. Returns without waiting for any endpoint. Call it
/// inside a tokio runtime; serve the result with [`crate::http::app`].
pub async fn start(location: StateLocation, settings: Settings) -> anyhow::Result<Arc<Server>> {
    let verifier = settings
        .credentials
        .as_deref()
        .map(Verifier::from_file)
        .transpose()?;
    let (store, artifacts, runtime_config, shown, metrics, queue) = match location {
        StateLocation::Directory(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
            let runtime_config = RuntimeConfig {
                cache_dir: Some(dir.join("compiled")),
                ..settings.runtime
            };
            let shown = dir.display().to_string();
            let metrics = (!settings.metric_retention.is_empty())
                .then(|| MetricStore::open(&dir, settings.metric_retention.clone()))
                .transpose()
                .map_err(|e| anyhow!(e))?;
            let store = Store::open(&dir)?;
            let queue = Queue::open(&dir.join("async-queue.log"))?;
            let taken = queue
                .take_over(&store)
                .context("cannot move the asynchronous queue out of the state database")?;
            if taken > 0 {
                tracing::info!(
                    jobs = taken,
                    "the asynchronous queue's jobs moved from the state database to its log"
                );
            }
            (
                store,
                dir.join("artifacts"),
                runtime_config,
                shown,
                metrics,
                queue,
            )
        }
        StateLocation::InMemory { artifacts } => (
            Store::in_memory()?,
            artifacts,
            settings.runtime,
            "memory".to_string(),
            (!settings.metric_retention.is_empty())
                .then(|| MetricStore::in_memory(settings.metric_retention.clone()))
                .transpose()
                .map_err(|e| anyhow!(e))?,
            Queue::in_memory(),
        ),
    };
    let contents = store
        .load()
        .with_context(|| format!("cannot read the state in {shown}"))?;
    let catalog = Catalog::from_stored(contents.models, contents.configs, contents.alarms)
        .with_context(|| format!("cannot read the state in {shown}"))?;
    let scaling = crate::state::scaling::Scaling::from_stored(contents.scaling)
        .with_context(|| format!("cannot read the scalable targets in {shown}"))?;
    let experiments = Experiments::load(&store)
        .with_context(|| format!("cannot read the experiments in {shown}"))?;
    let max_instances = runtime_config.max_instances as usize;
    let runtime = Arc::new(
        Runtime::new(&runtime_config)
            .map_err(|e| anyhow!("cannot start the Wasm engine: {e:#}"))?,
    );
    let roots = match &settings.artifact_roots {
        Some(dirs) => crate::state::artifacts::Roots::under(dirs).map_err(|e| anyhow!(e))?,
        None => crate::state::artifacts::Roots::anywhere(),
    };
    let storage = Arc::new(plinth_storage::Storage::new(settings.s3));
    let metrics = metrics.map(Arc::new);
    let stored = Arc::new(
        Stored::new(store, catalog, scaling, artifacts, roots, storage)
            .with_metrics(metrics.clone())
            .with_queue(queue),
    );
    let fleet = Arc::new(Fleet::new(runtime, stored, experiments, max_instances));
    if !contents.endpoints.is_empty() {
        tracing::info!(
            endpoints = contents.endpoints.len(),
            "restoring the stored endpoints in the background"
        );
    }
    crate::fleet::deploy::recover(&fleet, contents.endpoints);
    tokio::spawn(experiment_upkeep(fleet.clone()));
    tokio::spawn(serverless_upkeep(fleet.clone()));
    tokio::spawn(crate::fleet::async_jobs::run(fleet.clone()));
    crate::fleet::transform_jobs::resume(&fleet);
    tokio::spawn(crate::fleet::autoscaler::run(
        fleet.clone(),
        settings.autoscaling_minute,
    ));
    {
        let fleet = fleet.clone();
        let storage = fleet.stored.remote.storage().clone();
        let roll = settings.data_capture_roll;
        tokio::spawn(async move { fleet.captures.run(storage, roll).await });
    }
    tokio::spawn(crate::fleet::monitoring::run(fleet.clone()));
    tokio::spawn(crate::fleet::alarm_watch::run(fleet.clone()));
    if let Some(metrics) = metrics {
        tokio::spawn(crate::fleet::metric_publisher::run(fleet.clone(), metrics));
    }
    Ok(Arc::new(Server::new(
        fleet,
        settings.max_payload_bytes,
        settings.body_read_timeout,
        verifier,
    )))
}

/// A fleet on an in-memory store, with its own artifacts directory (kept as long as the
/// directory is), for the unit tests.
#[cfg(test)]
pub(crate) async fn in_memory_fleet() -> (Arc<Fleet>, tempfile::TempDir) {
    let artifacts = tempfile::tempdir().unwrap();
    let server = start(
        StateLocation::InMemory {
            artifacts: artifacts.path().to_path_buf(),
        },
        Settings::default(),
    )
    .await
    .unwrap();
    (server.fleet.clone(), artifacts)
}

/// `plinth serve`: start, apply the deployment file, listen until SIGINT or SIGTERM, then
/// stop accepting, finish the requests in flight (up to the drain deadline) and write the
/// experiments' ledger before returning. The stored endpoints are restored in the
/// background: only those the deployment file names are waited for, before it is applied
/// (it may update them, and an endpoint being restored takes no update); the others are
/// not, so one that never comes up cannot keep the server from listening.
pub fn run(options: ServeOptions) -> anyhow::Result<()> {
    let onnxruntime = options.onnxruntime.load()?;
    let bind = options.bind;
    if options.credentials.is_none() && !bind.ip().is_loopback() {
        bail!(
            "refusing to listen on {bind} without credentials: an unauthenticated Plinth binds \
             to loopback only (use --bind 127.0.0.1:PORT, or give --credentials FILE)"
        );
    }
    let tls = options.tls.acceptor(bind)?;
    let deployment = options.config.as_deref().map(read_deployment).transpose()?;
    let limits = options.http.limits();
    let s3 = plinth_storage::S3Settings::from_env(options.s3_endpoint_url)
        .map_err(|e| anyhow!("S3 settings: {e}"))?;
    tracing::info!("s3:// locations: {s3}");
    let settings = Settings {
        s3,
        runtime: RuntimeConfig {
            max_instances: options.max_instances,
            ..onnxruntime.runtime_config()
        },
        max_payload_bytes: deployment
            .as_ref()
            .map_or(config::DEFAULT_MAX_PAYLOAD_BYTES, |d| d.max_payload_bytes),
        credentials: options.credentials,
        body_read_timeout: limits.body_read_timeout,
        artifact_roots: Some(artifact_roots(
            options.artifact_roots,
            options.config.as_deref(),
        )?),
        autoscaling_minute: options.autoscaling_minute,
        data_capture_roll: options.data_capture_roll,
        metric_retention: options.metric_retention,
    };
    let data_dir = options.data_dir;
    let tokio = tokio::runtime::Runtime::new()?;
    let server = tokio.block_on(start(StateLocation::Directory(data_dir), settings))?;
    if let Some(deployment) = &deployment {
        let named: Vec<&str> = deployment.of("CreateEndpoint").map(|c| c.name()).collect();
        tokio.block_on(crate::fleet::deploy::settled(&server.fleet, &named));
        let mut control = InProcess {
            fleet: &server.fleet,
            runtime: tokio.handle(),
        };
        for change in apply::apply(&mut control, deployment)? {
            tracing::info!("{change}");
        }
    }
    tokio.block_on(async move {
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .with_context(|| format!("cannot listen on {bind}"))?;
        let address = listener.local_addr()?;
        if let Some(verifier) = &server.verifier {
            tracing::info!(
                region = verifier.region(),
                "every control-plane and runtime request must be signed (SigV4)"
            );
        } else {
            tracing::warn!("no credentials configured: serving unauthenticated on loopback only");
        }
        tracing::info!(endpoints = ?server.fleet.endpoints.names(), %address, ?limits, "serving");
        let scheme = if tls.is_some() { "https" } else { "http" };
        println!("listening on {scheme}://{address}");
        let fleet = server.fleet.clone();
        crate::http::listen::serve(
            listener,
            crate::http::app(server),
            limits,
            tls,
            shutdown_signal(),
        )
        .await;
        // The data capture files still open.
        if !fleet.captures.flush(Duration::from_secs(30)).await {
            tracing::error!("writing the open data capture files at shutdown did not finish");
        }
        // Whatever the upkeep's 250 ms flush has not written yet.
        let flushed =
            tokio::task::spawn_blocking(move || fleet.experiments.flush(&fleet.stored.store))
                .await
                .map_err(|e| e.to_string())
                .and_then(|written| written);
        if let Err(e) = flushed {
            tracing::error!(error = %e, "writing the experiments' ledger at shutdown failed");
        }
        anyhow::Ok(())
    })?;
    // Guest calls still running after the drain deadline (on the blocking pool) are not
    // waited for.
    tokio.shutdown_background();
    tracing::info!("stopped");
    Ok(())
}

/// Read a deployment file and check its entries against the API's members.
pub(crate) fn read_deployment(path: &Path) -> anyhow::Result<DeploymentFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the deployment file {}", path.display()))?;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    deployment_file::parse(&absolute, &text).map_err(|e| anyhow!("{e}"))
}

/// Apply `file` to a server in memory (its own store, a temporary artifacts directory, no
/// listening) and throw it away: what `plinth validate` checks.
pub(crate) fn dry_run(file: &DeploymentFile, onnxruntime: &OnnxRuntimeArgs) -> anyhow::Result<()> {
    let artifacts = tempfile::tempdir()?;
    let settings = Settings {
        s3: plinth_storage::S3Settings::from_env(None).map_err(|e| anyhow!("S3 settings: {e}"))?,
        runtime: onnxruntime.load()?.runtime_config(),
        max_payload_bytes: file.max_payload_bytes,
        credentials: None,
        body_read_timeout: Limits::DEFAULT_BODY_READ_TIMEOUT,
        artifact_roots: None,
        ..Settings::default()
    };
    let tokio = tokio::runtime::Runtime::new()?;
    let server = tokio.block_on(start(
        StateLocation::InMemory {
            artifacts: artifacts.path().to_path_buf(),
        },
        settings,
    ))?;
    let mut control = InProcess {
        fleet: &server.fleet,
        runtime: tokio.handle(),
    };
    apply::apply(&mut control, file)?;
    Ok(())
}

/// Runs a control-plane operation in this process, from a thread outside the runtime.
pub(crate) struct InProcess<'a> {
    pub(crate) fleet: &'a Arc<Fleet>,
    pub(crate) runtime: &'a tokio::runtime::Handle,
}

impl Control for InProcess<'_> {
    fn call(
        &mut self,
        operation: &str,
        input: serde_json::Value,
    ) -> Result<serde_json::Value, apply::CallError> {
        self.runtime
            .block_on(crate::ops::call(self.fleet, operation, input))
            .map_err(|e| apply::CallError {
                code: e.code().to_string(),
                message: e.message().to_string(),
            })
    }
}

/// Off the request path: write the experiments' ledger every 250 ms; every second,
/// publish new bandit shares and take the automatic actions that verdicts call for, through
/// the same weight update as a manual change.
async fn experiment_upkeep(state: Arc<Fleet>) {
    let mut flush = tokio::time::interval(std::time::Duration::from_millis(250));
    let mut ticks = 0u64;
    loop {
        flush.tick().await;
        let store_state = state.clone();
        let _ = tokio::task::spawn_blocking(move || {
            store_state.experiments.flush(&store_state.stored.store)
        })
        .await;
        ticks += 1;
        if !ticks.is_multiple_of(4) {
            continue;
        }
        for (experiment, weights, why) in state.experiments.tick() {
            let changes: Vec<plinth_policy::capacity::Change> = experiment
                .variants
                .iter()
                .zip(&weights)
                .map(|(variant, w)| plinth_policy::capacity::Change {
                    variant: variant.clone(),
                    weight: Some(*w),
                    instance_count: None,
                    serverless: None,
                })
                .collect();
            let _exclusive = state.changes.lock().await;
            match crate::fleet::deploy::update_weights_and_capacities(
                &state,
                &experiment.endpoint,
                &changes,
            ) {
                Ok(()) => {
                    tracing::warn!(endpoint = %experiment.endpoint, config = %experiment.config_name, ?weights, "experiment action: {why}")
                }
                Err(e) => {
                    tracing::error!(endpoint = %experiment.endpoint, error = %e, "experiment action failed: {why}")
                }
            }
        }
    }
}

/// Off the request path, every second: serverless variants drop the instances idle past
/// their idle timeout (beyond their provisioned concurrency).
async fn serverless_upkeep(state: Arc<Fleet>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        for endpoint in state.endpoints.all().values() {
            for v in endpoint.serving() {
                if let Some(pool) = v.live.serving.single() {
                    let dropped = pool.reap_idle();
                    if dropped > 0 {
                        tracing::debug!(endpoint = %endpoint.name, variant = %v.live.name, dropped, "idle serverless instances dropped");
                    }
                }
            }
        }
    }
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: finishing in-flight requests");
}

/// TLS for `plinth serve`: required for a bind beyond loopback (unless `--plaintext` says a
/// proxy in front terminates it).
#[derive(Args, Debug, Clone)]
pub struct TlsArgs {
    /// The server's certificate chain (PEM), for HTTPS.
    #[arg(
        long,
        value_name = "PEM",
        env = "PLINTH_TLS_CERT",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        value_name = "PEM",
        env = "PLINTH_TLS_KEY",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP beyond loopback: only behind a proxy that terminates TLS.
    #[arg(long, env = "PLINTH_PLAINTEXT")]
    plaintext: bool,
}

impl TlsArgs {
    /// The acceptor, if TLS is configured; refuses a bind beyond loopback without it
    /// (unless `--plaintext`).
    fn acceptor(&self, bind: SocketAddr) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            if !bind.ip().is_loopback() && !self.plaintext {
                bail!(
                    "refusing to serve plain HTTP on {bind}: beyond loopback Plinth serves HTTPS \
                     (give --tls-cert PEM and --tls-key PEM), or --plaintext behind a proxy \
                     that terminates TLS"
                );
            }
            return Ok(None);
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| anyhow!("--tls-cert {}: {e}", cert.display()))?;
        if chain.is_empty() {
            bail!("--tls-cert {}: no certificate in it", cert.display());
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| anyhow!("--tls-key {}: {e}", key.display()))?;
        // ring, not aws-lc-rs: no C build of a crypto library (rustls deprecates ring's
        // default provider only for its lack of post-quantum key exchange).
        #[allow(deprecated)]
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow!("TLS: {e}"))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| anyhow!("--tls-cert and --tls-key do not make a certificate: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }
}

/// The connection-limit flags of `plinth serve` (defaults in [`Limits`], where they are
/// documented).
#[derive(Args, Debug, Clone)]
pub struct HttpArgs {
    /// Seconds a client has to send a request's headers, from their first byte; a slower one
    /// is disconnected.
    #[arg(
        long,
        value_name = "SECONDS",
        env = "PLINTH_HEADER_READ_TIMEOUT",
        default_value_t = Limits::DEFAULT_HEADER_READ_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..),
    )]
    header_read_timeout: u64,
    /// Seconds a client has to send a request's body once its headers are in; a slower one
    /// is answered 408 and disconnected.
    #[arg(
        long,
        value_name = "SECONDS",
        env = "PLINTH_BODY_READ_TIMEOUT",
        default_value_t = Limits::DEFAULT_BODY_READ_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..),
    )]
    body_read_timeout: u64,
    /// Seconds a keep-alive connection may stay idle between requests before it is closed.
    #[arg(
        long,
        value_name = "SECONDS",
        env = "PLINTH_IDLE_TIMEOUT",
        default_value_t = Limits::DEFAULT_IDLE_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..),
    )]
    idle_timeout: u64,
    /// Connections open at once; at the cap, new connections wait (in the listen backlog)
    /// until one closes.
    #[arg(
        long,
        value_name = "N",
        env = "PLINTH_MAX_CONNECTIONS",
        default_value_t = Limits::DEFAULT_MAX_CONNECTIONS,
        value_parser = clap::value_parser!(u32).range(1..),
    )]
    max_connections: u32,
    /// Seconds a shutdown (SIGTERM, Ctrl-C) waits for the requests in flight before exiting.
    #[arg(
        long,
        value_name = "SECONDS",
        env = "PLINTH_DRAIN_TIMEOUT",
        default_value_t = Limits::DEFAULT_DRAIN_TIMEOUT.as_secs(),
    )]
    drain_timeout: u64,
}

impl HttpArgs {
    /// The limits these flags set.
    fn limits(&self) -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(self.header_read_timeout),
            body_read_timeout: Duration::from_secs(self.body_read_timeout),
            idle_timeout: Duration::from_secs(self.idle_timeout),
            max_connections: self.max_connections,
            drain_timeout: Duration::from_secs(self.drain_timeout),
        }
    }
}

/// The ONNX Runtime flags of `plinth serve`.
#[derive(Args, Debug, Clone, Default)]
pub struct OnnxRuntimeArgs {
    /// The ONNX Runtime library (libonnxruntime.so*, e.g. from the `onnxruntime` PyPI wheel:
    /// `.venv/lib/python3.*/site-packages/onnxruntime/capi/`), or the directory holding it.
    /// Default: $ORT_DYLIB_PATH. With it, models whose PlinthBackend is Auto run on ONNX
    /// Runtime; without it, every model runs on tract.
    #[arg(long = "onnxruntime", value_name = "PATH")]
    library: Option<PathBuf>,
    /// Threads one ONNX Runtime session may use for a request (intra-op). Default: the cores
    /// divided by the variant's instance count, at least 1.
    #[arg(
        long = "onnxruntime-intra-op-threads",
        value_name = "N",
        env = "PLINTH_ONNXRUNTIME_INTRA_OP_THREADS",
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    intra_op_threads: Option<u16>,
}

/// ONNX Runtime as `plinth serve` will use it.
pub(crate) struct OnnxRuntimeSettings {
    runtime: Option<OnnxRuntime>,
    intra_op_threads: Option<usize>,
}

impl OnnxRuntimeArgs {
    /// Find, load and check the library, if one is configured.
    pub(crate) fn load(&self) -> anyhow::Result<OnnxRuntimeSettings> {
        let from_env = std::env::var_os("ORT_DYLIB_PATH")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        let intra_op_threads = self.intra_op_threads.map(usize::from);
        let (path, source) = match (&self.library, from_env) {
            (Some(path), _) => (path.clone(), "--onnxruntime"),
            (None, Some(path)) if cfg!(feature = "onnxruntime") => (path, "ORT_DYLIB_PATH"),
            (None, Some(_)) => {
                tracing::warn!(
                    "ORT_DYLIB_PATH is set, but this Plinth was built without ONNX Runtime \
                     support (the `onnxruntime` feature): every model runs on tract"
                );
                return Ok(OnnxRuntimeSettings {
                    runtime: None,
                    intra_op_threads,
                });
            }
            (None, None) => {
                tracing::info!(
                    "ONNX Runtime not configured (--onnxruntime or ORT_DYLIB_PATH): every model \
                     runs on tract"
                );
                return Ok(OnnxRuntimeSettings {
                    runtime: None,
                    intra_op_threads,
                });
            }
        };
        let runtime = OnnxRuntime::load(&path).map_err(|e| {
            anyhow!(
                "{e} (from {source}); fix it, or start without --onnxruntime and ORT_DYLIB_PATH \
                 to serve every model with tract"
            )
        })?;
        tracing::info!(
            path = %runtime.path().display(),
            version = runtime.version(),
            intra_op_threads = ?intra_op_threads,
            "ONNX Runtime ready: models whose PlinthBackend is Auto or OnnxRuntime use it"
        );
        Ok(OnnxRuntimeSettings {
            runtime: Some(runtime),
            intra_op_threads,
        })
    }
}

impl OnnxRuntimeSettings {
    /// A runtime config with these settings (and every other setting at its default).
    pub(crate) fn runtime_config(self) -> RuntimeConfig {
        RuntimeConfig {
            onnxruntime: self.runtime,
            onnxruntime_intra_op_threads: self.intra_op_threads,
            ..RuntimeConfig::default()
        }
    }
}
