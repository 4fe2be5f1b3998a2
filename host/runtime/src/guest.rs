//! One guest instance: a `Store` with its sandbox (WASI with only the model directory,
//! read-only, and the declared environment; wasi-nn over the shared graphs; a memory cap),
//! the instantiated component, and the model `model-fn` returned.

use crate::blocking::BackendPool;
use crate::budget::{InstanceLimiter, MemoryBudget};
use crate::error::{DeadlineExceeded, HandlerErrorKind, HostLimit, InvokeError, LoadError};
use crate::limits::Limits;
use crate::nn::host::{CallDeadline, NnHost, NnView};
use crate::nn::{NnBackend, SharedGraphs};
use crate::stdio::{GuestOutput, LogBudget, Serving};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{ResourceAny, ResourceTable};
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "plinth:model/model",
        exports: { default: async },
        // Arguments to the guest borrow the host's request instead of copying it first.
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}

use bindings::exports::plinth::model::handler;
pub(crate) use bindings::ModelPre;

/// The handler interface of the contract's previous version, which had no `invoke`.
const OLD_HANDLER: &str = "plinth:model/handler@0.1.0";

/// Why a component is not a `model` world: wasmtime's reason, or, for a component built
/// for the contract's previous version, what to do about it.
pub(crate) fn wrong_world(
    engine: &Engine,
    component: &wasmtime::component::Component,
    error: &wasmtime::Error,
) -> String {
    let exports_old = component
        .component_type()
        .exports(engine)
        .any(|(name, _)| name == OLD_HANDLER);
    if exports_old {
        format!(
            "it was built for plinth:model@0.1.0 (it exports {OLD_HANDLER}), which this Plinth \
             no longer runs; rebuild it against this release's plinth-guest-sdk, which adds \
             `invoke`"
        )
    } else {
        format!("{error:#}")
    }
}

/// Where the guest sees its model artifact, as in SageMaker.
pub(crate) const GUEST_MODEL_DIR: &str = "/opt/ml/model";

/// Per-store host state.
pub(crate) struct HostState {
    wasi: WasiCtx,
    nn: NnHost,
    table: ResourceTable,
    limiter: InstanceLimiter,
    /// When the call in progress must stop.
    call: CallDeadline,
}

impl HostState {
    pub(crate) fn nn_view(&mut self) -> NnView<'_> {
        NnView {
            host: &self.nn,
            table: &mut self.table,
            call: self.call,
        }
    }

    /// Files and directories the guest holds open (each holds a host file descriptor).
    pub(crate) fn open_files(&mut self) -> usize {
        self.table
            .iter_mut()
            .filter(|entry| entry.is::<wasmtime_wasi::filesystem::Descriptor>())
            .count()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// One request, as the handler sees it.
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    /// The request body.
    pub body: bytes::Bytes,
    /// `Content-Type`.
    pub content_type: String,
    /// `Accept`; empty means the handler's default.
    pub accept: String,
    /// `X-Amzn-SageMaker-Inference-Id`, or a generated one.
    pub inference_id: String,
    /// `X-Amzn-SageMaker-Custom-Attributes`.
    pub custom_attributes: Option<String>,
    /// A deadline for this call shorter than the variant's (an inference pipeline's stage
    /// gets what is left of the chain's); `None`: the variant's. It runs from the call's
    /// start, as the variant's does.
    pub deadline: Option<Duration>,
}

impl Invocation {
    /// The deadline of this call on a variant whose own is `variant`.
    pub fn deadline_within(&self, variant: Duration) -> Duration {
        self.deadline.map_or(variant, |d| d.min(variant))
    }
}

/// A successful invocation.
#[derive(Debug, Clone)]
pub struct InvocationOutput {
    /// The response body.
    pub body: Vec<u8>,
    /// Its media type.
    pub content_type: String,
    /// Custom attributes the handler set, to send back.
    pub custom_attributes: Option<String>,
    /// Time spent in the guest and the backend (SageMaker's `ModelLatency`).
    pub model_latency: Duration,
    /// For a serverless variant, when this request waited for an instance to start: how
    /// long that took (SageMaker's `ModelSetupTime`).
    pub setup_time: Option<Duration>,
}

/// What every instance of a variant is built from.
pub(crate) struct InstanceTemplate {
    pub(crate) engine: Engine,
    /// Held so that the other variants of this component share its compiled copy.
    pub(crate) _component: Arc<wasmtime::component::Component>,
    pub(crate) pre: ModelPre<HostState>,
    pub(crate) graphs: SharedGraphs,
    /// The backend of the shared graphs, also used for graphs the guest loads from bytes.
    pub(crate) nn: NnBackend,
    /// Where backend work runs.
    pub(crate) backend_pool: BackendPool,
    pub(crate) model_dir: Option<PathBuf>,
    pub(crate) environment: Vec<(String, String)>,
    pub(crate) limits: Limits,
    /// Guest output the variant's instances dropped over their rate.
    pub(crate) logs: Arc<crate::stdio::Dropped>,
    pub(crate) endpoint: Arc<str>,
    pub(crate) variant: Arc<str>,
    /// What the pool's instances use (CPU time, memory).
    pub(crate) usage: Arc<crate::usage::Usage>,
}

/// A live, warm instance.
pub(crate) struct GuestInstance {
    store: Store<HostState>,
    bindings: bindings::Model,
    model: ResourceAny,
    stderr: GuestOutput,
    stdout: GuestOutput,
    serving: Serving,
    endpoint: Arc<str>,
    max_response_bytes: usize,
    /// Its pool's usage, and the bytes this instance last reported to it.
    usage: Arc<crate::usage::Usage>,
    reported: usize,
}

/// How an invocation on an instance ended: the result, and whether the instance may be
/// reused.
pub(crate) struct Outcome {
    pub(crate) result: Result<InvocationOutput, InvokeError>,
    pub(crate) reusable: bool,
}

impl InstanceTemplate {
    /// A message from inside the sandbox with the model directory's host paths.
    fn host_paths(&self, text: &str) -> String {
        match &self.model_dir {
            Some(dir) => host_paths(text, dir),
            None => text.to_owned(),
        }
    }

    /// Create a store, instantiate the component and run `model-fn`, within the startup
    /// deadline (SageMaker's `ContainerStartupHealthCheckTimeoutInSeconds`), whatever the
    /// guest waits on.
    pub(crate) async fn instantiate(&self) -> Result<GuestInstance, LoadError> {
        let startup = self.limits.startup_deadline;
        match tokio::time::timeout(startup + Limits::WATCHDOG_GRACE, self.start()).await {
            Ok(started) => started,
            Err(_) => Err(LoadError::ModelFn(startup_timeout(startup))),
        }
    }

    async fn start(&self) -> Result<GuestInstance, LoadError> {
        let serving = Serving::default();
        let log_budget = LogBudget::new(self.logs.clone());
        let stdout = GuestOutput::new(
            "stdout",
            self.endpoint.clone(),
            self.variant.clone(),
            serving.clone(),
            log_budget.clone(),
        );
        let stderr = GuestOutput::new(
            "stderr",
            self.endpoint.clone(),
            self.variant.clone(),
            serving.clone(),
            log_budget,
        );
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .envs(&self.environment)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if let Some(dir) = &self.model_dir {
            wasi.preopened_dir(dir, GUEST_MODEL_DIR, FsPerms::ReadOnly)
                .map_err(|e| LoadError::Artifact {
                    path: dir.display().to_string(),
                    reason: format!("cannot open the model directory: {e}"),
                })?;
        }
        let budget = MemoryBudget::new(self.limits.memory_bytes);
        let mut table = ResourceTable::new();
        table.set_max_capacity(Limits::MAX_RESOURCE_HANDLES);
        let startup = self.limits.startup_deadline;
        let state = HostState {
            wasi: wasi.build(),
            nn: NnHost {
                graphs: self.graphs.clone(),
                backend: self.nn.clone(),
                graphs_from_bytes: self.limits.graphs_from_bytes,
                budget: budget.clone(),
                pool: self.backend_pool.counted_in(self.usage.clone()),
            },
            table,
            limiter: InstanceLimiter { budget },
            call: CallDeadline {
                at: Instant::now() + startup,
                deadline: startup,
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Every epoch tick the guest gives way to the other tasks on its thread, and past
        // its deadline it is stopped.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            Ok(if Instant::now() >= ctx.data().call.at {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        let bindings = match self.pre.instantiate_async(&mut store).await {
            Ok(bindings) => bindings,
            Err(e) if is_timeout(&e) => return Err(LoadError::ModelFn(startup_timeout(startup))),
            Err(e)
                if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                    .is_some() =>
            {
                return Err(LoadError::NoInstanceSlot(format!(
                    "no instance can start: {e} (plinth serve --max-instances raises it)"
                )))
            }
            Err(e) => {
                return Err(LoadError::Engine(format!(
                    "instantiation failed: {}",
                    describe_trap(&e, &stderr, startup)
                )))
            }
        };
        let model = match bindings
            .plinth_model_handler()
            .call_model_fn(&mut store, GUEST_MODEL_DIR)
            .await
        {
            Ok(Ok(model)) => model,
            Ok(Err(e)) => {
                let message = handler_error(e).to_string();
                return Err(LoadError::ModelFn(self.host_paths(&message)));
            }
            Err(trap) if is_timeout(&trap) => {
                return Err(LoadError::ModelFn(startup_timeout(startup)))
            }
            Err(trap) => {
                let message = describe_trap(&trap, &stderr, startup);
                return Err(LoadError::ModelFn(self.host_paths(&message)));
            }
        };
        let mut instance = GuestInstance {
            store,
            bindings,
            model,
            stderr,
            stdout,
            serving,
            endpoint: self.endpoint.clone(),
            max_response_bytes: self.limits.max_response_bytes,
            usage: self.usage.clone(),
            reported: 0,
        };
        instance.report_memory();
        Ok(instance)
    }
}

/// `text` with each path under the guest's model directory (`/opt/ml/model/...`) given as
/// the host path it is mounted from, so that an operator can look at the file.
fn host_paths(text: &str, model_dir: &std::path::Path) -> String {
    let host = model_dir.display().to_string();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(GUEST_MODEL_DIR) {
        let after = &rest[at + GUEST_MODEL_DIR.len()..];
        let whole = after
            .chars()
            .next()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '-' || c == '.'));
        out.push_str(&rest[..at]);
        out.push_str(if whole { &host } else { GUEST_MODEL_DIR });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Why a `model-fn` that ran out of time failed.
fn startup_timeout(startup: Duration) -> String {
    format!(
        "it did not finish within the startup deadline of {} s \
         (ContainerStartupHealthCheckTimeoutInSeconds)",
        startup.as_secs_f64()
    )
}

/// Whether a call ended because its deadline passed: stopped by the epoch deadline, or
/// while waiting on backend work.
fn is_timeout(error: &wasmtime::Error) -> bool {
    matches!(
        error.downcast_ref::<wasmtime::Trap>(),
        Some(wasmtime::Trap::Interrupt)
    ) || error.downcast_ref::<DeadlineExceeded>().is_some()
}

impl Drop for GuestInstance {
    fn drop(&mut self) {
        self.stdout.summarise_dropped();
        self.usage.memory_moved(self.reported, 0);
    }
}

impl GuestInstance {
    /// Tell the pool's usage the bytes the instance holds now.
    pub(crate) fn report_memory(&mut self) {
        let now = self.memory_used();
        self.usage.memory_moved(self.reported, now);
        self.reported = now;
    }

    /// The bytes the instance holds against its memory limit now: its linear memory and the
    /// host bytes it holds through wasi-nn.
    pub(crate) fn memory_used(&self) -> usize {
        self.store.data().limiter.budget.used()
    }

    /// Serve one request with the handler's `invoke` (`input-fn` -> `predict-fn` ->
    /// `output-fn` in the guest, one call) under one deadline.
    pub(crate) async fn invoke(
        &mut self,
        request: &Invocation,
        variant: &str,
        deadline: Duration,
    ) -> Outcome {
        self.serving.set([request.inference_id.as_str()]);
        let started = self.start(deadline);
        let ctx = context(request, variant);
        let result = self.call(request, ctx).await;
        let model_latency = started.elapsed();
        match result {
            Ok(Ok(response)) => Outcome {
                result: validate_output(response, model_latency, self.max_response_bytes),
                reusable: true,
            },
            Ok(Err(e)) => Outcome {
                result: Err(handler_error(e)),
                reusable: true,
            },
            Err(trap) => {
                let _ = self.stdout.take_tail();
                let message = describe_trap(&trap, &self.stderr, deadline);
                let timed_out = is_timeout(&trap);
                let backtrace = trap
                    .downcast_ref::<wasmtime::WasmBacktrace>()
                    .map(|b| b.to_string())
                    .unwrap_or_default();
                tracing::error!(
                    endpoint = %self.endpoint,
                    variant = %variant,
                    inference_id = %request.inference_id,
                    error = %message,
                    backtrace = %backtrace,
                    "guest trapped; replacing the instance"
                );
                Outcome {
                    result: Err(if timed_out {
                        InvokeError::Timeout(deadline)
                    } else {
                        InvokeError::Trap { message }
                    }),
                    reusable: false,
                }
            }
        }
    }

    /// Serve several requests with the handler's `invoke-batch`, under one deadline. `None`
    /// when the call trapped (or answered with the wrong number of results): the instance
    /// must then be replaced, and the requests served again one by one.
    pub(crate) async fn invoke_batch(
        &mut self,
        requests: &[&Invocation],
        variant: &str,
        deadline: Duration,
    ) -> Option<Vec<Result<InvocationOutput, InvokeError>>> {
        self.serving
            .set(requests.iter().map(|r| r.inference_id.as_str()));
        let started = self.start(deadline);
        let batch: Vec<handler::Request> = requests
            .iter()
            .map(|r| handler::Request {
                body: &r.body,
                content_type: &r.content_type,
                accept: &r.accept,
                ctx: context(r, variant),
            })
            .collect();
        let result = self
            .bindings
            .plinth_model_handler()
            .call_invoke_batch(&mut self.store, self.model, &batch)
            .await;
        let model_latency = started.elapsed();
        let problem = match result {
            Ok(results) if results.len() == requests.len() => {
                return Some(
                    results
                        .into_iter()
                        .map(|r| match r {
                            Ok(response) => {
                                validate_output(response, model_latency, self.max_response_bytes)
                            }
                            Err(e) => Err(handler_error(e)),
                        })
                        .collect(),
                )
            }
            Ok(results) => format!(
                "invoke-batch answered {} results for {} requests",
                results.len(),
                requests.len()
            ),
            Err(trap) => {
                let _ = self.stdout.take_tail();
                describe_trap(&trap, &self.stderr, deadline)
            }
        };
        tracing::warn!(
            endpoint = %self.endpoint,
            variant = %variant,
            inference_ids = requests
                .iter()
                .map(|r| r.inference_id.as_str())
                .collect::<Vec<_>>()
                .join(","),
            error = %problem,
            "a batch failed as a whole; replacing the instance and serving its requests one by one"
        );
        None
    }

    /// Arm the deadline of a call starting now.
    fn start(&mut self, deadline: Duration) -> Instant {
        let started = Instant::now();
        self.store.data_mut().call = CallDeadline {
            at: started + deadline,
            deadline,
        };
        self.store.set_epoch_deadline(1);
        started
    }

    async fn call(
        &mut self,
        request: &Invocation,
        ctx: handler::Context<'_>,
    ) -> wasmtime::Result<Result<handler::Response, handler::HandlerError>> {
        let h = self.bindings.plinth_model_handler();
        h.call_invoke(
            &mut self.store,
            self.model,
            &request.body,
            &request.content_type,
            &request.accept,
            ctx,
        )
        .await
    }
}

/// The handler's view of a request.
fn context<'a>(request: &'a Invocation, variant: &'a str) -> handler::Context<'a> {
    handler::Context {
        inference_id: &request.inference_id,
        custom_attributes: request.custom_attributes.as_deref(),
        variant_name: variant,
    }
}

fn handler_error(e: handler::HandlerError) -> InvokeError {
    let (kind, message) = match e {
        handler::HandlerError::BadRequest(m) => (HandlerErrorKind::BadRequest, m),
        handler::HandlerError::UnsupportedMediaType(m) => {
            (HandlerErrorKind::UnsupportedMediaType, m)
        }
        handler::HandlerError::NotAcceptable(m) => (HandlerErrorKind::NotAcceptable, m),
        handler::HandlerError::ModelError(m) => (HandlerErrorKind::ModelError, m),
    };
    InvokeError::Handler { kind, message }
}

/// Reject responses the host could not send as they are.
fn validate_output(
    response: handler::Response,
    model_latency: Duration,
    max_response_bytes: usize,
) -> Result<InvocationOutput, InvokeError> {
    if response.body.len() > max_response_bytes {
        return Err(InvokeError::InvalidOutput(format!(
            "the response body is {} bytes, over the model's limit of {} bytes \
             (PlinthLimits.MaxResponseSizeInMB, 6 by default)",
            response.body.len(),
            max_response_bytes
        )));
    }
    let valid_type = !response.content_type.is_empty()
        && response.content_type.len() <= 1024
        && response.content_type.contains('/')
        && response
            .content_type
            .bytes()
            .all(|b| b.is_ascii_graphic() || b == b' ');
    if !valid_type {
        return Err(InvokeError::InvalidOutput(format!(
            "content type {:?} is not a valid media type",
            response.content_type
        )));
    }
    if let Some(attrs) = &response.custom_attributes {
        if attrs.len() > 1024 || !attrs.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            return Err(InvokeError::InvalidOutput(
                "custom attributes must be at most 1024 visible ASCII characters".into(),
            ));
        }
    }
    Ok(InvocationOutput {
        body: response.body,
        content_type: response.content_type,
        custom_attributes: response.custom_attributes,
        model_latency,
        setup_time: None,
    })
}

/// What a trap that is no host limit says: its kind, or the error's first line.
fn trap_reason(error: &wasmtime::Error, deadline: Duration) -> String {
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => format!("deadline of {deadline:?} exceeded"),
        Some(wasmtime::Trap::UnreachableCodeReached) => {
            "unreachable code reached (a panic or abort)".into()
        }
        Some(trap) => trap.to_string(),
        None => {
            let text = format!("{error:#}");
            if text.contains("resource table has no free keys") {
                HostLimit::ResourceHandles {
                    limit: Limits::MAX_RESOURCE_HANDLES,
                }
                .to_string()
            } else if text.contains("memory") && text.contains("grow") {
                "memory limit exceeded".into()
            } else {
                text.lines().next().unwrap_or_default().to_string()
            }
        }
    }
}

/// A readable account of a trap: its kind plus what the guest last wrote to stderr (for a
/// Rust guest, the panic message).
fn describe_trap(error: &wasmtime::Error, stderr: &GuestOutput, deadline: Duration) -> String {
    let reason = if let Some(limit) = error.downcast_ref::<HostLimit>() {
        limit.to_string()
    } else if let Some(late) = error.downcast_ref::<DeadlineExceeded>() {
        late.to_string()
    } else {
        trap_reason(error, deadline)
    };
    let tail = stderr.take_tail();
    let panic = tail
        .lines()
        .rev()
        .find(|l| l.contains("panicked at"))
        .map(|start| {
            let from = tail.rfind(start).unwrap_or(0);
            tail[from..]
                .lines()
                .take_while(|l| !l.starts_with("note:"))
                .take(4)
                .collect::<Vec<_>>()
                .join(" ")
        });
    match panic {
        Some(p) => format!("{reason}: {p}"),
        None => reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Backend, Limits, Runtime, RuntimeConfig, VariantPool, VariantSpec};

    #[test]
    fn sandbox_paths_are_reported_as_host_paths() {
        let dir = std::path::Path::new("/srv/models/iris");
        assert_eq!(
            host_paths("cannot read /opt/ml/model/model.onnx: not found", dir),
            "cannot read /srv/models/iris/model.onnx: not found"
        );
        assert_eq!(host_paths("in /opt/ml/model", dir), "in /srv/models/iris");
        assert_eq!(
            host_paths("\"/opt/ml/model\" and /opt/ml/model/a", dir),
            "\"/srv/models/iris\" and /srv/models/iris/a"
        );
        // Another directory that merely starts the same is left alone.
        assert_eq!(host_paths("/opt/ml/models/x", dir), "/opt/ml/models/x");
        assert_eq!(host_paths("nothing here", dir), "nothing here");
    }

    /// `invoke` answers exactly as the three handler functions called one by one, for a
    /// success and for each kind of handler error.
    #[tokio::test]
    async fn invoke_matches_the_three_calls() {
        let runtime = Runtime::new(&RuntimeConfig::default()).unwrap();
        let pool = VariantPool::new(
            &runtime,
            &VariantSpec {
                endpoint: "test".into(),
                variant: "AllTraffic".into(),
                component: plinth_tests::IRIS_WASM.into(),
                model_dir: Some(plinth_tests::IRIS_MODEL_DIR.into()),
                environment: Vec::new(),
                instance_count: 0,
                routing: Default::default(),
                limits: Limits::default(),
                backend: Backend::Tract,
                elastic: None,
            },
        )
        .await
        .unwrap();
        let mut instance = pool.template().instantiate().await.unwrap();
        let ctx = handler::Context {
            inference_id: "id",
            custom_attributes: None,
            variant_name: "AllTraffic",
        };
        let cases: [(&[u8], &str, &str); 5] = [
            (b"5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3", "text/csv", ""),
            (b"[[5.1,3.5,1.4,0.2]]", "application/json", "text/csv"),
            (b"1,2,3", "text/csv", ""),
            (b"5.1,3.5,1.4,0.2", "image/png", ""),
            (b"5.1,3.5,1.4,0.2", "text/csv", "text/html"),
        ];
        for (body, content_type, accept) in cases {
            let one = instance
                .call(
                    &Invocation {
                        body: bytes::Bytes::copy_from_slice(body),
                        content_type: content_type.into(),
                        accept: accept.into(),
                        ..Invocation::default()
                    },
                    ctx.clone(),
                )
                .await
                .unwrap();
            let h = instance.bindings.plinth_model_handler();
            let store = &mut instance.store;
            let three = async {
                let payload = match h
                    .call_input_fn(&mut *store, body, content_type, ctx.clone())
                    .await?
                {
                    Ok(p) => p,
                    Err(e) => return Ok(Err(e)),
                };
                let prediction = match h
                    .call_predict_fn(&mut *store, payload, instance.model, ctx.clone())
                    .await?
                {
                    Ok(p) => p,
                    Err(e) => return Ok(Err(e)),
                };
                h.call_output_fn(&mut *store, prediction, accept, ctx.clone())
                    .await
            }
            .await
            .map_err(|e: wasmtime::Error| e.to_string())
            .unwrap();
            assert_eq!(
                format!("{one:?}"),
                format!("{three:?}"),
                "{content_type} / {accept}"
            );
        }
    }
}
