//! The command line: `serve`, `validate`, `invoke` (a runtime API client) and `local`
//! (SageMaker's local mode: one component, one input, no server).

use crate::api::{self, AppState};
use crate::endpoints;
use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand};
use plinth_policy::config;
use plinth_runtime::{Invocation, Limits, Runtime, RuntimeConfig, VariantPool, VariantSpec};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Plinth: a self-hosted model host with SageMaker's runtime API.
#[derive(Parser)]
#[command(version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the endpoints of a deployment file.
    Serve {
        /// The deployment file (TOML).
        #[arg(long, short, env = "PLINTH_CONFIG")]
        config: PathBuf,
        /// Address to listen on. Without credentials Plinth serves loopback only.
        #[arg(long, env = "PLINTH_BIND", default_value = "127.0.0.1:8080")]
        bind: SocketAddr,
        /// Where Plinth keeps compiled components and state.
        #[arg(long, env = "PLINTH_DATA_DIR", default_value = ".plinth")]
        data_dir: PathBuf,
    },
    /// Check a deployment file without serving it.
    Validate {
        /// The deployment file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Invoke an endpoint over HTTP (InvokeEndpoint).
    Invoke {
        #[command(flatten)]
        target: EndpointArgs,
        /// `X-Amzn-SageMaker-Target-Variant`.
        #[arg(long)]
        target_variant: Option<String>,
        #[command(flatten)]
        request: RequestArgs,
    },
    /// Show an endpoint: status and, per variant, current and desired weight and instance
    /// count (DescribeEndpoint).
    DescribeEndpoint {
        #[command(flatten)]
        target: EndpointArgs,
    },
    /// Change variants' weights and instance counts live
    /// (UpdateEndpointWeightsAndCapacities). Repeat --variant for several.
    UpdateWeights {
        #[command(flatten)]
        target: EndpointArgs,
        /// `NAME[:weight=W][:instances=N]`, e.g. `B:weight=3:instances=2`.
        #[arg(long = "variant", required = true, value_parser = parse_change)]
        changes: Vec<serde_json::Value>,
    },
    /// Run one component on one input, without a server (SageMaker's local mode).
    Local {
        /// The component (.wasm).
        #[arg(long)]
        component: PathBuf,
        /// The model artifact directory, mounted read-only at /opt/ml/model.
        #[arg(long)]
        model_data: Option<PathBuf>,
        /// Environment for the guest, `KEY=VALUE`; repeatable.
        #[arg(long = "env", value_parser = parse_env)]
        environment: Vec<(String, String)>,
        /// Memory cap in MiB.
        #[arg(long, default_value_t = config::DEFAULT_MEMORY_MIB)]
        memory_mib: u64,
        /// Deadline in seconds.
        #[arg(long, default_value_t = config::DEFAULT_TIMEOUT_SECONDS)]
        timeout_seconds: u64,
        #[command(flatten)]
        request: RequestArgs,
    },
}

/// Which endpoint of which Plinth server a client command talks to.
#[derive(Args)]
struct EndpointArgs {
    /// The endpoint's name.
    #[arg(long)]
    endpoint: String,
    /// Plinth's address.
    #[arg(
        long,
        env = "PLINTH_ENDPOINT_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    endpoint_url: String,
}

/// The request both `invoke` and `local` send.
#[derive(Args)]
struct RequestArgs {
    /// `Content-Type` of the body.
    #[arg(long, default_value = "application/json")]
    content_type: String,
    /// `Accept`.
    #[arg(long)]
    accept: Option<String>,
    /// `X-Amzn-SageMaker-Custom-Attributes`.
    #[arg(long)]
    custom_attributes: Option<String>,
    /// The body, as text.
    #[arg(
        long,
        conflicts_with = "body_file",
        required_unless_present = "body_file"
    )]
    body: Option<String>,
    /// The body, from a file.
    #[arg(long)]
    body_file: Option<PathBuf>,
}

impl RequestArgs {
    fn body(&self) -> anyhow::Result<Vec<u8>> {
        match (&self.body, &self.body_file) {
            (Some(text), _) => Ok(text.clone().into_bytes()),
            (None, Some(path)) => {
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))
            }
            (None, None) => bail!("give --body or --body-file"),
        }
    }
}

/// `NAME[:weight=W][:instances=N]` as a `DesiredWeightAndCapacity`.
fn parse_change(text: &str) -> Result<serde_json::Value, String> {
    let mut parts = text.split(':');
    let name = parts
        .next()
        .filter(|n| !n.is_empty())
        .ok_or("missing the variant name")?;
    let mut change = serde_json::json!({ "VariantName": name });
    for part in parts {
        match part.split_once('=') {
            Some(("weight", w)) => {
                let w: f64 = w
                    .parse()
                    .map_err(|_| format!("weight {w:?} is not a number"))?;
                change["DesiredWeight"] = w.into();
            }
            Some(("instances", n)) => {
                let n: i64 = n
                    .parse()
                    .map_err(|_| format!("instances {n:?} is not an integer"))?;
                change["DesiredInstanceCount"] = n.into();
            }
            _ => return Err(format!("{part:?}: expected weight=W or instances=N")),
        }
    }
    Ok(change)
}

/// Call a control-plane operation (awsJson1_1) and return its output.
fn control_call(
    url: &str,
    operation: &str,
    input: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/", url.trim_end_matches('/')))
        .header("x-amz-target", format!("SageMaker.{operation}"))
        .header("content-type", "application/x-amz-json-1.1")
        .body(input.to_string())
        .send()
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let output: serde_json::Value = response.json().unwrap_or_default();
    if !status.is_success() {
        bail!(
            "{} ({status}): {}",
            output["__type"].as_str().unwrap_or("error"),
            output["message"].as_str().unwrap_or_default()
        );
    }
    Ok(output)
}

fn print_description(target: &EndpointArgs) -> anyhow::Result<()> {
    let output = control_call(
        &target.endpoint_url,
        "DescribeEndpoint",
        serde_json::json!({ "EndpointName": target.endpoint }),
    )?;
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

pub(crate) fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            config,
            bind,
            data_dir,
        } => serve(config, bind, data_dir),
        Command::Validate { config } => {
            let deployment = read_deployment(&config)?;
            println!("ok: {} endpoints", deployment.endpoints.len());
            Ok(())
        }
        Command::Invoke {
            target,
            target_variant,
            request,
        } => invoke(&target, target_variant.as_deref(), &request),
        Command::DescribeEndpoint { target } => print_description(&target),
        Command::UpdateWeights { target, changes } => {
            control_call(
                &target.endpoint_url,
                "UpdateEndpointWeightsAndCapacities",
                serde_json::json!({
                    "EndpointName": target.endpoint,
                    "DesiredWeightsAndCapacities": changes,
                }),
            )?;
            print_description(&target)
        }
        Command::Local {
            component,
            model_data,
            environment,
            memory_mib,
            timeout_seconds,
            request,
        } => local(
            VariantSpec {
                endpoint: "local".into(),
                variant: "local".into(),
                component,
                model_dir: model_data,
                environment,
                instance_count: 1,
                routing: Default::default(),
                limits: Limits {
                    memory_bytes: (memory_mib as usize) << 20,
                    deadline: std::time::Duration::from_secs(timeout_seconds),
                    ..Limits::default()
                },
            },
            &request,
        ),
    }
}

fn read_deployment(path: &std::path::Path) -> anyhow::Result<config::Deployment> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the deployment file {}", path.display()))?;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    config::parse(&absolute, &text).map_err(|e| anyhow!("{e}"))
}

fn new_runtime(data_dir: Option<&std::path::Path>) -> anyhow::Result<Runtime> {
    let config = RuntimeConfig {
        cache_dir: data_dir.map(|d| d.join("compiled")),
        ..RuntimeConfig::default()
    };
    Runtime::new(&config).map_err(|e| anyhow!("cannot start the Wasm engine: {e:#}"))
}

fn serve(config: PathBuf, bind: SocketAddr, data_dir: PathBuf) -> anyhow::Result<()> {
    if !bind.ip().is_loopback() {
        bail!(
            "refusing to listen on {bind} without credentials: Plinth is unauthenticated, so it \
             binds to loopback only (use --bind 127.0.0.1:PORT)"
        );
    }
    let deployment = read_deployment(&config)?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let runtime = Arc::new(new_runtime(Some(&data_dir))?);
    let map = endpoints::build_all(&runtime, &deployment)?;
    let state = Arc::new(AppState::new(
        runtime,
        crate::catalog::Catalog::from_deployment(&deployment),
        deployment.max_payload_bytes,
    ));
    state.endpoints.publish_all(map);

    let tokio = tokio::runtime::Runtime::new()?;
    tokio.block_on(async move {
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .with_context(|| format!("cannot listen on {bind}"))?;
        let address = listener.local_addr()?;
        tracing::warn!("no credentials configured: serving unauthenticated on loopback only");
        tracing::info!(endpoints = ?state.endpoints.names(), %address, "serving");
        println!("listening on http://{address}");
        axum::serve(listener, api::app(state))
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        Ok(())
    })
}

async fn shutdown_signal() {
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

fn invoke(
    target: &EndpointArgs,
    target_variant: Option<&str>,
    request: &RequestArgs,
) -> anyhow::Result<()> {
    let (url, endpoint) = (&target.endpoint_url, &target.endpoint);
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(70))
        .build()?;
    let mut call = client
        .post(format!(
            "{}/endpoints/{endpoint}/invocations",
            url.trim_end_matches('/')
        ))
        .header("content-type", &request.content_type)
        .body(request.body()?);
    if let Some(accept) = &request.accept {
        call = call.header("accept", accept);
    }
    if let Some(attributes) = &request.custom_attributes {
        call = call.header("x-amzn-sagemaker-custom-attributes", attributes);
    }
    if let Some(variant) = target_variant {
        call = call.header("x-amzn-sagemaker-target-variant", variant);
    }
    let response = call.send().with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let variant = response
        .headers()
        .get("x-amzn-invoked-production-variant")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response.bytes()?;
    if !status.is_success() {
        let detail: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        bail!(
            "{} ({status}): {}",
            detail["__type"].as_str().unwrap_or("error"),
            detail["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned())
        );
    }
    if let Some(variant) = variant {
        eprintln!("variant: {variant}");
    }
    use std::io::Write;
    let mut out = std::io::stdout();
    out.write_all(&body)?;
    if !body.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    Ok(())
}

fn local(spec: VariantSpec, request: &RequestArgs) -> anyhow::Result<()> {
    let runtime = new_runtime(None)?;
    let pool = VariantPool::new(&runtime, &spec)?;
    let output = pool
        .invoke_blocking(&Invocation {
            body: request.body()?.into(),
            content_type: request.content_type.clone(),
            accept: request.accept.clone().unwrap_or_default(),
            inference_id: uuid::Uuid::new_v4().to_string(),
            custom_attributes: request.custom_attributes.clone(),
        })
        .map_err(|e| match e.original_status() {
            Some(status) => anyhow!("{e} (the handler's status: {status})"),
            None => anyhow!("{e}"),
        })?;
    eprintln!(
        "content-type: {}; model latency: {:.3} ms",
        output.content_type,
        output.model_latency.as_secs_f64() * 1e3
    );
    use std::io::Write;
    let mut out = std::io::stdout();
    out.write_all(&output.body)?;
    if !output.body.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    Ok(())
}
