//! The command line: `serve` (handed to [`crate::serve`]); `validate`; clients of a running
//! server (`invoke`, `apply`, `describe-endpoint`, `update-weights`, `api` for any
//! control-plane operation, `rollout`, `shadow`, `experiment`; `bench`, a load test, in
//! [`bench`]; `batch`, a transform job followed to its end, in [`batch`]); `local` (SageMaker's local mode: one component, one input, no server); and
//! for plugin authors `new` (a plugin crate from the template, in [`new`]), `dev` (handed to
//! [`crate::dev`]) and `inspect` (a model directory's graphs).

pub(crate) mod batch;
pub(crate) mod bench;
pub(crate) mod body;
pub(crate) mod client;
pub(crate) mod metrics;
pub(crate) mod new;
pub(crate) mod watch;

use crate::apply::{self, Control};
use crate::cli::client::Client;
use crate::sigv4::Credential;
use anyhow::{anyhow, bail, Context};
use body::BodyArgs;
use clap::{Args, Parser, Subcommand};
use plinth_policy::config;
use plinth_runtime::{Invocation, Limits, Runtime, RuntimeConfig, VariantPool, VariantSpec};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Plinth: a self-hosted model host with SageMaker's runtime API.
#[derive(Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the endpoints stored in the data directory, after applying a deployment file
    /// if one is given.
    Serve {
        /// A deployment file (TOML) to apply at start.
        #[arg(long, short, env = "PLINTH_CONFIG")]
        config: Option<PathBuf>,
        /// Address to listen on. Without credentials Plinth serves loopback only.
        #[arg(long, env = "PLINTH_BIND", default_value = "127.0.0.1:8080")]
        bind: SocketAddr,
        /// Where Plinth keeps its state database, compiled components and unpacked artifacts.
        #[arg(long, env = "PLINTH_DATA_DIR", default_value = ".plinth")]
        data_dir: PathBuf,
        /// A TOML file of access keys; every control-plane and runtime request must then be
        /// signed (AWS SigV4) with one of them.
        #[arg(long, env = "PLINTH_CREDENTIALS")]
        credentials: Option<PathBuf>,
        #[command(flatten)]
        onnxruntime: crate::serve::OnnxRuntimeArgs,
        #[command(flatten)]
        http: crate::serve::HttpArgs,
        #[command(flatten)]
        tls: crate::serve::TlsArgs,
        /// A directory models' `Image` and `ModelDataUrl` may name files under (repeat it for
        /// several; PLINTH_ARTIFACT_ROOTS separates them with `:`). None given: the working
        /// directory. A deployment file's own directory counts for the file.
        #[arg(
            long = "artifact-root",
            env = "PLINTH_ARTIFACT_ROOTS",
            value_delimiter = ':'
        )]
        artifact_roots: Vec<PathBuf>,
        /// An S3-compatible store's endpoint for `s3://` locations (e.g.
        /// http://127.0.0.1:9000); default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, the
        /// profile's endpoint_url, else AWS's. Credentials and region come as the AWS CLI
        /// takes them (AWS_ACCESS_KEY_ID..., AWS_PROFILE, AWS_REGION).
        #[arg(long, value_name = "URL", env = "PLINTH_S3_ENDPOINT_URL")]
        s3_endpoint_url: Option<String>,
        /// Wasm instances the server reserves room for, all variants together: the most
        /// instances its endpoints may ask for, and the most a multi-model variant's loaded
        /// models hold with them (each loaded model holds its instances).
        #[arg(
            long,
            value_name = "N",
            default_value_t = 1000,
            env = "PLINTH_MAX_INSTANCES",
            value_parser = clap::value_parser!(u32).range(1..=100_000)
        )]
        max_instances: u32,
        /// The length, in seconds, of the minute Application Auto Scaling's policies count
        /// in: each datapoint covers one, a policy scales out after 3 above its target and in
        /// after 15 below, and cooldowns are counted in them. 60 is AWS's; less compresses
        /// scaling's time for tests and demos.
        #[arg(
            long,
            value_name = "SECONDS",
            default_value_t = 60,
            env = "PLINTH_AUTOSCALING_MINUTE",
            value_parser = clap::value_parser!(u64).range(1..=60)
        )]
        autoscaling_minute: u64,
        /// How long, in seconds, a data capture file stays open before it is written to its
        /// destination (sooner at 16 MiB or the hour's end). A crash loses at most this long
        /// of each variant's captured records.
        #[arg(
            long,
            value_name = "SECONDS",
            default_value_t = 60,
            env = "PLINTH_DATA_CAPTURE_ROLL_SECONDS",
            value_parser = clap::value_parser!(u64).range(1..=3600)
        )]
        data_capture_roll_seconds: u64,
        /// The metric store's resolutions and how long each is kept (`RESOLUTION:RETENTION`,
        /// finest first), or `off` to store no metrics (CloudWatch's GetMetricStatistics and
        /// GetMetricData then find no data).
        #[arg(long, value_name = "TIERS", default_value = plinth_policy::metric_data::DEFAULT_RETENTION)]
        metric_retention: String,
    },
    /// Apply a deployment file to a running server through the control-plane operations.
    Apply {
        /// The deployment file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Call any control-plane operation (SageMaker's, Plinth's or Application Auto Scaling's),
    /// e.g. `plinth api ListEndpoints '{"MaxResults": 5}'`; prints its output.
    Api {
        /// The operation, e.g. `DescribeModel`.
        operation: String,
        /// Its input, as JSON.
        #[arg(default_value = "{}")]
        input: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Check a deployment file without serving it: every entry against the API's members,
    /// then the whole file applied to a server in memory (components loaded, endpoints
    /// brought up), nothing kept.
    Validate {
        /// The deployment file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Print the file as `[[CreateModel]]`, `[[CreateEndpointConfig]]`,
        /// `[[CreateAlarm]]` and `[[CreateEndpoint]]` entries (paths resolved), e.g. to
        /// rewrite a file in the earlier spelling.
        #[arg(long)]
        print: bool,
        #[command(flatten)]
        onnxruntime: crate::serve::OnnxRuntimeArgs,
    },
    /// Invoke an endpoint over HTTP (InvokeEndpoint).
    Invoke {
        #[command(flatten)]
        target: EndpointArgs,
        /// `X-Amzn-SageMaker-Target-Variant`.
        #[arg(long)]
        target_variant: Option<String>,
        /// `X-Amzn-SageMaker-Target-Container-Hostname`: the container of a Direct
        /// multi-container model that serves the request.
        #[arg(long)]
        target_container: Option<String>,
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
    /// Show an endpoint's A/B experiment: per variant invocations, outcomes, mean with its
    /// interval, traffic share, and the comparison with the control (DescribeExperiment).
    Experiment {
        /// The endpoint's name.
        endpoint: String,
        #[command(flatten)]
        server: ServerArgs,
        /// Print the JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Blue/green and rolling deployments: start one, or follow one live.
    Rollout {
        #[command(subcommand)]
        action: Rollout,
    },
    /// Show an endpoint's model quality per variant, side by side, from its last monitoring
    /// execution (ListMonitoringExecutions): each metric with its 95 % interval, and
    /// whether each variant differs significantly from the best.
    Quality {
        /// The endpoint's name.
        endpoint: String,
        /// Only this monitoring schedule's executions (default: the endpoint's latest).
        #[arg(long)]
        schedule: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
        /// Print the execution's JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Show an endpoint's CloudWatch metrics over a recent window (ListMetrics and
    /// GetMetricData): per variant its requests, errors and latency percentiles, or with
    /// --metric one metric as a sparkline (Sum of a count, p99 of a latency).
    Metrics {
        /// The endpoint's name.
        endpoint: String,
        /// Only this variant.
        #[arg(long)]
        variant: Option<String>,
        /// One metric (`Invocations`, `ModelLatency`, `Invocation5XXErrors`...), drawn as a
        /// sparkline per variant.
        #[arg(long)]
        metric: Option<String>,
        /// How far back: `90s`, `30m`, `1h`, `2d`.
        #[arg(long, default_value = "1h")]
        since: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show an endpoint's shadow variants next to production: sampled, dropped, errors,
    /// latency and agreement with production's answers (DescribeShadowVariants).
    Shadow {
        /// The endpoint's name.
        endpoint: String,
        #[command(flatten)]
        server: ServerArgs,
        /// Print the JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// List a multi-model endpoint's loaded models per variant: size, load time, requests
    /// and last use (ListLoadedModels).
    Models {
        /// The endpoint's name.
        endpoint: String,
        #[command(flatten)]
        server: ServerArgs,
        /// Print the JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Asynchronous endpoints' queues.
    Async {
        #[command(subcommand)]
        command: AsyncCommand,
    },
    /// Load-test an endpoint (SageMaker's Inference Recommender).
    ///
    /// Requests/s, latency percentiles, errors and the variant split per concurrency, request
    /// rate or instance count, and the instance count that meets a latency target.
    Bench {
        #[command(flatten)]
        args: crate::cli::bench::BenchArgs,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Run a batch transform job (CreateTransformJob) over files in storage: on a running
    /// server with --model, or with no server with --component; a progress line while it
    /// runs, a summary at its end.
    Batch {
        #[command(flatten)]
        args: crate::cli::batch::BatchArgs,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print the inputs and outputs (names, element types, shapes) of each ONNX graph in a
    /// model directory (the `*.onnx` files at its top, by file stem, as a guest loads them by
    /// name) or of one `.onnx` file, and which backends load it.
    Inspect {
        /// A model directory or an `.onnx` file.
        path: PathBuf,
        #[command(flatten)]
        onnxruntime: crate::serve::OnnxRuntimeArgs,
    },
    /// Write a new plugin crate: Cargo.toml for wasm32-wasip2, a handler with its tests, a
    /// README and a small ONNX model, ready to build and serve (`cd NAME && plinth dev`).
    New {
        /// The crate's name (and the endpoint `plinth dev` serves it as).
        name: String,
        /// The directory to create it in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Plinth's guest-sdk directory, for the crate's path dependency. Default: the one
        /// this plinth was built from.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Serve one component as one endpoint on loopback, no deployment file: build the crate
    /// (or take --component), and on every change to its sources, the component or the
    /// model directory, rebuild and move the endpoint to the new version through
    /// UpdateEndpoint (no request fails; a failed build keeps the last good version).
    Dev {
        /// The plugin crate to build (default: the working directory), unless --component.
        #[arg(conflicts_with = "component")]
        crate_dir: Option<PathBuf>,
        /// A component (.wasm) to serve instead of building a crate.
        #[arg(long)]
        component: Option<PathBuf>,
        /// The model directory, mounted at /opt/ml/model. Default: the crate's `model/`.
        #[arg(long)]
        model_data: Option<PathBuf>,
        /// The endpoint's name. Default: the component's (`my_model.wasm` -> `my-model`).
        #[arg(long)]
        endpoint: Option<String>,
        /// Address to listen on (loopback only).
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: SocketAddr,
        /// The variant's instance count.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
        instances: u32,
        /// Serve without watching for changes.
        #[arg(long)]
        no_watch: bool,
        /// Milliseconds between looks at the watched files.
        #[arg(long, default_value_t = 300, hide = true)]
        poll_ms: u64,
        #[command(flatten)]
        onnxruntime: crate::serve::OnnxRuntimeArgs,
    },
    /// Fetch a model artifact (`s3://bucket/key`, a `file://` URL or a path) and unpack it
    /// as a model's `ModelDataUrl` is, into DEST/s3/<sha256>/; prints what it did as JSON.
    Fetch {
        /// The artifact's location.
        location: String,
        /// Where to keep it (the layout of a data directory's `artifacts`).
        #[arg(long)]
        dest: PathBuf,
        /// An S3-compatible store's endpoint (as `plinth serve --s3-endpoint-url`).
        #[arg(long, value_name = "URL", env = "PLINTH_S3_ENDPOINT_URL")]
        s3_endpoint_url: Option<String>,
        /// Seconds the fetch may take.
        #[arg(long, default_value_t = 3600)]
        timeout_seconds: u64,
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

#[derive(Subcommand)]
enum Rollout {
    /// Update an endpoint to another endpoint config through a blue/green (or rolling)
    /// deployment (UpdateEndpoint with a DeploymentConfig). Without a strategy flag, all
    /// traffic moves at once, then bakes.
    Start {
        /// The endpoint's name.
        endpoint: String,
        /// The endpoint config to move to.
        endpoint_config: String,
        /// Canary: this percentage of traffic first, then the rest.
        #[arg(long, conflicts_with_all = ["linear", "rolling"])]
        canary: Option<i64>,
        /// Linear: steps of this percentage (10-50).
        #[arg(long, conflicts_with = "rolling")]
        linear: Option<i64>,
        /// Rolling: batches of this percentage of the instances (5-50).
        #[arg(long)]
        rolling: Option<i64>,
        /// Baking period after each step, in seconds (WaitIntervalInSeconds).
        #[arg(long, default_value_t = 60)]
        bake: i64,
        /// How long the old fleet stays warm after the last step (TerminationWaitInSeconds).
        #[arg(long, default_value_t = 0)]
        termination_wait: i64,
        /// An alarm that rolls the deployment back; repeatable.
        #[arg(long = "alarm")]
        alarms: Vec<String>,
        /// Follow the deployment until it ends (exit status 1 if it rolls back or fails).
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Follow an endpoint's deployment live: its events, and a progress bar of the new
    /// fleet's traffic share. Exit status 1 if it rolls back or fails.
    Watch {
        /// The endpoint's name.
        endpoint: String,
        #[command(flatten)]
        server: ServerArgs,
        /// Print the events as JSON lines.
        #[arg(long)]
        json: bool,
    },
}

/// The `DeploymentConfig` for `plinth rollout start`'s flags.
fn deployment_config(
    canary: Option<i64>,
    linear: Option<i64>,
    rolling: Option<i64>,
    bake: i64,
    termination_wait: i64,
    alarms: &[String],
) -> serde_json::Value {
    use serde_json::json;
    let percent = |value: i64| json!({ "Type": "CAPACITY_PERCENT", "Value": value });
    let mut config = match (canary, linear, rolling) {
        (_, _, Some(batch)) => json!({ "RollingUpdatePolicy": {
            "MaximumBatchSize": percent(batch), "WaitIntervalInSeconds": bake } }),
        (Some(size), _, _) => json!({ "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": { "Type": "CANARY", "WaitIntervalInSeconds": bake, "CanarySize": percent(size) },
            "TerminationWaitInSeconds": termination_wait } }),
        (_, Some(step), _) => json!({ "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": { "Type": "LINEAR", "WaitIntervalInSeconds": bake, "LinearStepSize": percent(step) },
            "TerminationWaitInSeconds": termination_wait } }),
        _ => json!({ "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": { "Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": bake },
            "TerminationWaitInSeconds": termination_wait } }),
    };
    if !alarms.is_empty() {
        config["AutoRollbackConfiguration"] = json!({
            "Alarms": alarms.iter().map(|a| json!({ "AlarmName": a })).collect::<Vec<_>>()
        });
    }
    config
}

/// `plinth async`'s commands.
#[derive(Subcommand)]
enum AsyncCommand {
    /// Show an asynchronous endpoint's queue: jobs queued, running and done (kept a day),
    /// the backlog as SageMaker's metrics measure it, and the notifications' deliveries
    /// (DescribeAsyncQueue).
    Status {
        /// The endpoint's name.
        endpoint: String,
        #[command(flatten)]
        server: ServerArgs,
        /// Print the JSON instead of the summary.
        #[arg(long)]
        json: bool,
    },
}

/// DescribeAsyncQueue's output as a summary.
fn queue_summary(q: &serde_json::Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let n = |key: &str| q[key].as_f64().unwrap_or(0.0);
    let _ = writeln!(
        out,
        "endpoint {}: {} queued, {} running on {} instances ({} per instance); {} completed, {} failed in the last day",
        q["EndpointName"].as_str().unwrap_or_default(),
        q["Queued"],
        q["Running"],
        q["InstanceCount"],
        q["MaxConcurrentInvocationsPerInstance"],
        q["Completed"],
        q["Failed"],
    );
    let _ = writeln!(
        out,
        "backlog {} ({:.2} per instance), oldest {:.1} s{}",
        n("ApproximateBacklogSize"),
        n("ApproximateBacklogSizePerInstance"),
        n("ApproximateAgeOfOldestRequest"),
        if n("HasBacklogWithoutCapacity") > 0.0 {
            ", waiting for an instance"
        } else {
            ""
        },
    );
    let notes = &q["Notifications"];
    let _ = writeln!(
        out,
        "notifications: {} delivered, {} pending, {} failed",
        notes["Delivered"], notes["Pending"], notes["Failed"],
    );
    for u in notes["Undelivered"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {} after {} tries: {}",
            u["Url"].as_str().unwrap_or_default(),
            u["Tries"],
            u["LastTry"].as_str().unwrap_or_default(),
        );
    }
    out
}

/// ListLoadedModels' output as a table.
fn models_table(report: &serde_json::Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for v in report["Variants"].as_array().into_iter().flatten() {
        let mib = |b: &serde_json::Value| b.as_f64().unwrap_or(0.0) / f64::from(1 << 20);
        let _ = writeln!(
            out,
            "variant {}: {} models, {:.1} of {:.1} MiB",
            v["VariantName"].as_str().unwrap_or_default(),
            v["LoadedModelCount"],
            mib(&v["UsedBytes"]),
            mib(&v["ModelCacheSizeInBytes"]),
        );
        let _ = writeln!(
            out,
            "  {:<40} {:>10} {:>9} {:>9} {:>8} {:>10}",
            "TARGET MODEL", "SIZE", "FETCH", "LOAD", "HITS", "IDLE"
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        for m in v["Models"].as_array().into_iter().flatten() {
            let last = m["LastUsed"].as_f64().unwrap_or(0.0);
            let _ = writeln!(
                out,
                "  {:<40} {:>7.2} MiB {:>6.1} ms {:>6.1} ms {:>8} {:>8.1} s",
                m["TargetModel"].as_str().unwrap_or_default(),
                mib(&m["SizeInBytes"]),
                m["DownloadTimeInMs"].as_f64().unwrap_or(0.0),
                m["LoadTimeInMs"].as_f64().unwrap_or(0.0),
                m["Hits"],
                (now - last).max(0.0),
            );
        }
    }
    out
}

/// A monitoring execution's metrics per variant, side by side (value ± 95 % interval),
/// and which variants differ significantly from the best of each metric.
fn quality_table(execution: &serde_json::Value) -> String {
    use plinth_policy::model_quality::{interval, significant};
    use std::fmt::Write;
    let variants: Vec<(&String, &serde_json::Value)> = execution["PlinthVariants"]
        .as_object()
        .into_iter()
        .flatten()
        .collect();
    let endpoint = &execution["PlinthEndpointMetrics"];
    let metric = |v: &serde_json::Value, name: &str| {
        let m = &v["Metrics"][name];
        m["Value"]
            .as_f64()
            .map(|value| (value, m["StandardDeviation"].as_f64()))
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} on {}: {} ({}), scheduled {}",
        execution["MonitoringScheduleName"].as_str().unwrap_or("?"),
        execution["EndpointName"].as_str().unwrap_or("?"),
        execution["MonitoringExecutionStatus"]
            .as_str()
            .unwrap_or("?"),
        execution["PlinthProblemType"].as_str().unwrap_or("?"),
        execution["ScheduledTime"]
            .as_f64()
            .map(|t| plinth_policy::data_capture::utc((t * 1000.0) as i64).iso())
            .unwrap_or_default()
    );
    let _ = write!(out, "{:<38}", "METRIC");
    for (name, v) in &variants {
        let _ = write!(out, " {:>22}", format!("{name} (n={})", v["ItemCount"]));
    }
    let _ = writeln!(
        out,
        " {:>22}",
        format!("endpoint (n={})", endpoint["ItemCount"])
    );
    let names: Vec<&String> = endpoint["Metrics"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
        .filter(|k| !k.ends_with("_best_constant_classifier"))
        .collect();
    let cell = |m: Option<(f64, Option<f64>)>| match m {
        Some((v, Some(sd))) => format!("{v:.4} ± {:.4}", interval(sd)),
        Some((v, None)) => format!("{v:.4}"),
        None => "-".into(),
    };
    let mut notes = Vec::new();
    for name in &names {
        let _ = write!(out, "{name:<38}");
        for (_, v) in &variants {
            let _ = write!(out, " {:>22}", cell(metric(v, name)));
        }
        let _ = writeln!(out, " {:>22}", cell(metric(endpoint, name)));
        // Lower is better for the errors; higher for the rest.
        let lower = matches!(name.as_str(), "mae" | "mse" | "rmse") || name.starts_with("false_");
        let best = variants
            .iter()
            .filter_map(|(n, v)| metric(v, name).map(|m| (*n, m)))
            .max_by(|a, b| {
                let o = a.1 .0.total_cmp(&b.1 .0);
                if lower {
                    o.reverse()
                } else {
                    o
                }
            });
        if let Some((best_name, best)) = best {
            for (n, v) in &variants {
                if *n == best_name {
                    continue;
                }
                if let Some(m) = metric(v, name) {
                    let verdict = match significant(best, m) {
                        Some(true) => "significantly",
                        Some(false) => "not significantly",
                        None => "(fewer than 200 rows: untested)",
                    };
                    notes.push(format!("{name}: {best_name} better than {n}, {verdict}"));
                }
            }
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(out);
        for note in notes {
            let _ = writeln!(out, "{note}");
        }
    }
    out
}

/// DescribeShadowVariants' output as a table.
fn shadow_table(report: &serde_json::Value) -> String {
    use std::fmt::Write;
    let rate = |v: &serde_json::Value| {
        v.as_f64()
            .map_or("-".to_string(), |r| format!("{:.1}%", r * 100.0))
    };
    let micros = |v: &serde_json::Value| {
        v.as_f64()
            .map_or("-".to_string(), |us| format!("{:.0} µs", us))
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:<10} {:>9} {:>8} {:>8} {:>11} {:>11} {:>8} {:>8} {:>8}",
        "VARIANT", "ROLE", "SAMPLED", "DROPPED", "ERRORS", "P50", "P99", "EXACT", "CLOSE", "ARGMAX"
    );
    for p in report["ProductionVariants"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let r = &p["Recent"];
        let _ = writeln!(
            out,
            "{:<20} {:<10} {:>9} {:>8} {:>8} {:>11} {:>11} {:>8} {:>8} {:>8}",
            p["VariantName"].as_str().unwrap_or_default(),
            "production",
            "-",
            "-",
            rate(&r["ErrorRate"]),
            micros(&r["ModelLatencyP50"]),
            micros(&r["ModelLatencyP99"]),
            "-",
            "-",
            "-"
        );
    }
    for s in report["ShadowProductionVariants"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let r = &s["Recent"];
        let _ = writeln!(
            out,
            "{:<20} {:<10} {:>9} {:>8} {:>8} {:>11} {:>11} {:>8} {:>8} {:>8}",
            s["VariantName"].as_str().unwrap_or_default(),
            "shadow",
            s["Sampled"],
            s["Dropped"],
            rate(&s["ErrorRate"]),
            micros(&r["ModelLatencyP50"]),
            micros(&r["ModelLatencyP99"]),
            rate(&s["ExactAgreement"]),
            rate(&s["NumericAgreement"]),
            rate(&s["ArgmaxAgreement"])
        );
    }
    out
}

/// Which Plinth server a client command talks to, and how it signs.
#[derive(Args)]
struct ServerArgs {
    /// Plinth's address.
    #[arg(
        long,
        env = "PLINTH_ENDPOINT_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    endpoint_url: String,
    /// Access key id to sign requests with (with AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    access_key_id: Option<String>,
    /// The secret key (from the environment only).
    #[arg(skip = std::env::var("AWS_SECRET_ACCESS_KEY").ok())]
    secret_access_key: Option<String>,
    /// The region to sign for.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    region: String,
}

impl ServerArgs {
    fn client(&self) -> anyhow::Result<Client> {
        let credential = match (&self.access_key_id, &self.secret_access_key) {
            (Some(id), Some(secret)) => Some(Credential {
                access_key_id: id.clone(),
                secret_access_key: secret.clone(),
            }),
            (Some(_), None) => {
                bail!("--access-key-id needs AWS_SECRET_ACCESS_KEY in the environment")
            }
            _ => None,
        };
        Client::new(&self.endpoint_url, credential, self.region.clone())
    }
}

/// Which endpoint of which Plinth server a client command talks to.
#[derive(Args)]
struct EndpointArgs {
    /// The endpoint's name.
    #[arg(long)]
    endpoint: String,
    #[command(flatten)]
    server: ServerArgs,
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
    #[command(flatten)]
    body: BodyArgs,
}

impl RequestArgs {
    fn body(&self) -> anyhow::Result<Vec<u8>> {
        self.body.read()
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

fn print_description(target: &EndpointArgs) -> anyhow::Result<()> {
    let output = target.server.client()?.call(
        "DescribeEndpoint",
        serde_json::json!({ "EndpointName": target.endpoint }),
    )?;
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}

/// DescribeExperiment's output as a table.
fn experiment_table(report: &serde_json::Value) -> String {
    use std::fmt::Write;
    let e = &report["Experiment"];
    let mut out = format!(
        "endpoint {} (config {}): control {}, metric {}, routing {}, confidence {}\n",
        report["EndpointName"].as_str().unwrap_or_default(),
        report["EndpointConfigName"].as_str().unwrap_or_default(),
        e["ControlVariant"].as_str().unwrap_or_default(),
        e["Metric"].as_str().unwrap_or_default(),
        e["RoutingStrategy"].as_str().unwrap_or_default(),
        e["Confidence"],
    );
    let _ = writeln!(
        out,
        "{:<16} {:>11} {:>7} {:>10} {:>9} {:>8} {:>19} {:>7} {:>10} {:>10}  verdict",
        "variant",
        "invocations",
        "errors",
        "latency ms",
        "outcomes",
        "mean",
        "interval",
        "share",
        "difference",
        "p (seq)"
    );
    let number = |v: &serde_json::Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.4}"));
    for v in report["Variants"].as_array().into_iter().flatten() {
        let interval = match v["Interval"].as_array() {
            Some(i) if i.len() == 2 => format!("[{}, {}]", number(&i[0]), number(&i[1])),
            _ => "-".into(),
        };
        let c = &v["Comparison"];
        let _ = writeln!(
            out,
            "{:<16} {:>11} {:>7} {:>10} {:>9} {:>8} {:>19} {:>7} {:>10} {:>10}  {}",
            v["VariantName"].as_str().unwrap_or_default(),
            v["Invocations"],
            v["Errors"],
            number(&v["MeanModelLatencyMs"]),
            v["Outcomes"],
            number(&v["Mean"]),
            interval,
            number(&v["TrafficShare"]),
            number(&c["Difference"]),
            number(&c["Sequential"]["PValue"]),
            v["Verdict"].as_str().unwrap_or_default(),
        );
    }
    let _ = writeln!(
        out,
        "recommended: {}",
        report["RecommendedAction"].as_str().unwrap_or_default()
    );
    let rejected = &report["RejectedOutcomes"];
    let _ = writeln!(out, "rejected outcomes: {rejected}");
    out
}

/// `plinth fetch`: the artifact at `location` fetched and unpacked under `dest` as a
/// model's would be; what was done, as JSON.
fn fetch(
    location: &str,
    dest: &std::path::Path,
    endpoint: Option<String>,
    timeout_seconds: u64,
) -> anyhow::Result<serde_json::Value> {
    use crate::state::artifacts::Packing;
    use crate::state::remote::{Remote, RemoteArtifacts};
    let s3 = plinth_storage::S3Settings::from_env(endpoint).map_err(|e| anyhow!(e))?;
    tracing::info!("s3:// locations: {s3}");
    let location = plinth_storage::Location::parse(location).map_err(|e| anyhow!(e))?;
    std::fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let remote = RemoteArtifacts::new(std::sync::Arc::new(plinth_storage::Storage::new(s3)), dest);
    let started = std::time::Instant::now();
    let dir = tokio::runtime::Runtime::new()?
        .block_on(remote.local(
            &Remote::Object {
                location: location.clone(),
                packing: Packing::Auto,
            },
            std::time::Duration::from_secs(timeout_seconds),
            None,
        ))
        .map_err(|e| anyhow!(e))?;
    let seconds = started.elapsed().as_secs_f64();
    let files = plinth_storage::Location::Local(dir.clone());
    let bytes: u64 = tokio::runtime::Runtime::new()?
        .block_on(plinth_storage::Storage::new(Default::default()).list(&files))
        .map_err(|e| anyhow!(e))?
        .iter()
        .map(|o| o.size)
        .sum();
    Ok(serde_json::json!({
        "Location": location.to_string(),
        "Directory": dir.display().to_string(),
        "UnpackedBytes": bytes,
        "Seconds": seconds,
    }))
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

impl Cli {
    /// The log level when `PLINTH_LOG` is not set: `warn` for `validate`, whose server in
    /// memory would otherwise log every step, `info` for the rest.
    pub fn default_log_level(&self) -> &'static str {
        match self.command {
            Command::Validate { .. } => "warn",
            _ => "info",
        }
    }
}

/// Run a command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            config,
            bind,
            data_dir,
            credentials,
            onnxruntime,
            http,
            tls,
            artifact_roots,
            s3_endpoint_url,
            max_instances,
            autoscaling_minute,
            data_capture_roll_seconds,
            metric_retention,
        } => crate::serve::run(crate::serve::ServeOptions {
            config,
            bind,
            data_dir,
            credentials,
            onnxruntime,
            http,
            tls,
            artifact_roots,
            s3_endpoint_url,
            max_instances,
            autoscaling_minute: std::time::Duration::from_secs(autoscaling_minute),
            data_capture_roll: std::time::Duration::from_secs(data_capture_roll_seconds),
            metric_retention: plinth_policy::metric_data::parse_retention(&metric_retention)
                .map_err(|e| anyhow::anyhow!(e))?,
        }),
        Command::Apply { config, server } => {
            let deployment = crate::serve::read_deployment(&config)?;
            for change in apply::apply(&mut server.client()?, &deployment)? {
                println!("{change}");
            }
            println!(
                "ok: {} endpoints InService",
                deployment.of("CreateEndpoint").count()
            );
            Ok(())
        }
        Command::Api {
            operation,
            input,
            server,
        } => {
            let input: serde_json::Value = serde_json::from_str(&input)
                .with_context(|| format!("the input {input:?} is not JSON"))?;
            let output = server.client()?.call(&operation, input)?;
            println!("{}", serde_json::to_string_pretty(&output)?);
            Ok(())
        }
        Command::New { name, dir, sdk } => {
            let root = new::create(&name, &dir, sdk.as_deref())?;
            println!("created {}", root.display());
            println!("next: cd {} && plinth dev", root.display());
            Ok(())
        }
        Command::Dev {
            crate_dir,
            component,
            model_data,
            endpoint,
            bind,
            instances,
            no_watch,
            poll_ms,
            onnxruntime,
        } => crate::dev::run(crate::dev::DevOptions {
            source: match component {
                Some(file) => crate::dev::Source::Component(file),
                None => crate::dev::Source::Crate(crate_dir.unwrap_or_else(|| PathBuf::from("."))),
            },
            model_data,
            endpoint,
            bind,
            instances,
            watch: !no_watch,
            poll: std::time::Duration::from_millis(poll_ms.max(10)),
            onnxruntime,
        }),
        Command::Fetch {
            location,
            dest,
            s3_endpoint_url,
            timeout_seconds,
        } => {
            let output = fetch(&location, &dest, s3_endpoint_url, timeout_seconds)?;
            println!("{output}");
            Ok(())
        }
        Command::Inspect { path, onnxruntime } => {
            print!("{}", inspect(&path, &onnxruntime)?);
            Ok(())
        }
        Command::Validate {
            config,
            print,
            onnxruntime,
        } => {
            let deployment = crate::serve::read_deployment(&config)?;
            crate::serve::dry_run(&deployment, &onnxruntime)
                .with_context(|| config.display().to_string())?;
            if print {
                print!("{}", deployment.to_toml().map_err(anyhow::Error::msg)?);
                return Ok(());
            }
            if deployment.earlier_spelling {
                eprintln!(
                    "note: {} uses the earlier spelling ([[models]], [[endpoint_configs]], \
                     [[endpoints]], [[alarms]]); `plinth validate --print --config {}` prints it \
                     as [[CreateModel]], [[CreateEndpointConfig]], [[CreateAlarm]] and \
                     [[CreateEndpoint]] entries",
                    config.display(),
                    config.display()
                );
            }
            println!("ok: {} endpoints", deployment.of("CreateEndpoint").count());
            Ok(())
        }
        Command::Invoke {
            target,
            target_variant,
            target_container,
            request,
        } => invoke(
            &target,
            target_variant.as_deref(),
            target_container.as_deref(),
            &request,
        ),
        Command::DescribeEndpoint { target } => print_description(&target),
        Command::Experiment {
            endpoint,
            server,
            json,
        } => {
            let report = server.client()?.call(
                "DescribeExperiment",
                serde_json::json!({ "EndpointName": endpoint }),
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", experiment_table(&report));
            }
            Ok(())
        }
        Command::Rollout {
            action:
                Rollout::Start {
                    endpoint,
                    endpoint_config,
                    canary,
                    linear,
                    rolling,
                    bake,
                    termination_wait,
                    alarms,
                    watch,
                    server,
                },
        } => {
            let mut client = server.client()?;
            client.call(
                "UpdateEndpoint",
                serde_json::json!({
                    "EndpointName": endpoint,
                    "EndpointConfigName": endpoint_config,
                    "DeploymentConfig": deployment_config(canary, linear, rolling, bake, termination_wait, &alarms),
                }),
            )?;
            println!("deployment of {endpoint_config} to {endpoint} started");
            if watch {
                follow(&mut client, &endpoint, false)?;
            }
            Ok(())
        }
        Command::Rollout {
            action:
                Rollout::Watch {
                    endpoint,
                    server,
                    json,
                },
        } => follow(&mut server.client()?, &endpoint, json),
        Command::Quality {
            endpoint,
            schedule,
            server,
            json,
        } => {
            let mut input = serde_json::json!({
                "EndpointName": endpoint,
                "SortBy": "CreationTime",
                "SortOrder": "Descending",
                "MaxResults": 100,
            });
            if let Some(schedule) = &schedule {
                input["MonitoringScheduleName"] = serde_json::json!(schedule);
            }
            let listed = server.client()?.call("ListMonitoringExecutions", input)?;
            let execution = listed["MonitoringExecutionSummaries"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e.get("PlinthVariants").is_some())
                .ok_or_else(|| {
                    anyhow!(
                        "endpoint {endpoint} has no completed monitoring execution{}",
                        schedule
                            .as_deref()
                            .map(|s| format!(" of schedule {s}"))
                            .unwrap_or_default()
                    )
                })?;
            if json {
                println!("{}", serde_json::to_string_pretty(execution)?);
            } else {
                print!("{}", quality_table(execution));
            }
            Ok(())
        }
        Command::Metrics {
            endpoint,
            variant,
            metric,
            since,
            server,
        } => {
            let since = plinth_policy::metric_data::parse_duration(&since).ok_or_else(|| {
                anyhow!("--since {since:?} is not a duration such as 90s, 30m, 1h or 2d")
            })?;
            let query = metrics::Query {
                endpoint: &endpoint,
                variant: variant.as_deref(),
                metric: metric.as_deref(),
                since,
                now: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs() as i64,
            };
            print!("{}", metrics::show(&mut server.client()?, &query)?);
            Ok(())
        }
        Command::Shadow {
            endpoint,
            server,
            json,
        } => {
            let report = server.client()?.call(
                "DescribeShadowVariants",
                serde_json::json!({ "EndpointName": endpoint }),
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", shadow_table(&report));
            }
            Ok(())
        }
        Command::Models {
            endpoint,
            server,
            json,
        } => {
            let report = server.client()?.call(
                "ListLoadedModels",
                serde_json::json!({ "EndpointName": endpoint }),
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", models_table(&report));
            }
            Ok(())
        }
        Command::Async {
            command:
                AsyncCommand::Status {
                    endpoint,
                    server,
                    json,
                },
        } => {
            let report = server.client()?.call(
                "DescribeAsyncQueue",
                serde_json::json!({ "EndpointName": endpoint }),
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", queue_summary(&report));
            }
            Ok(())
        }
        Command::Batch { args, server } => batch::run(args, || server.client()),
        Command::Bench { args, server } => {
            let client = server.client()?;
            let credential = server
                .access_key_id
                .clone()
                .zip(server.secret_access_key.clone())
                .map(|(access_key_id, secret_access_key)| Credential {
                    access_key_id,
                    secret_access_key,
                });
            let target = crate::cli::bench::Server {
                endpoint_url: server.endpoint_url,
                credential,
                region: server.region,
            };
            crate::cli::bench::run(&args, client, &target)
        }
        Command::UpdateWeights { target, changes } => {
            target.server.client()?.call(
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
                backend: Default::default(),
                elastic: None,
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

/// Follow a deployment; an error (exit status 1) if it rolled back or failed.
fn follow(client: &mut Client, endpoint: &str, json: bool) -> anyhow::Result<()> {
    let succeeded = crate::cli::watch::watch(
        client,
        endpoint,
        json,
        std::time::Duration::from_millis(200),
    )?;
    if !succeeded {
        bail!("the deployment of endpoint {endpoint} did not complete");
    }
    Ok(())
}

fn invoke(
    target: &EndpointArgs,
    target_variant: Option<&str>,
    target_container: Option<&str>,
    request: &RequestArgs,
) -> anyhow::Result<()> {
    let mut headers = vec![("content-type", request.content_type.as_str())];
    if let Some(accept) = &request.accept {
        headers.push(("accept", accept));
    }
    if let Some(attributes) = &request.custom_attributes {
        headers.push(("x-amzn-sagemaker-custom-attributes", attributes));
    }
    if let Some(variant) = target_variant {
        headers.push(("x-amzn-sagemaker-target-variant", variant));
    }
    if let Some(container) = target_container {
        headers.push(("x-amzn-sagemaker-target-container-hostname", container));
    }
    let answer = target
        .server
        .client()?
        .invoke(&target.endpoint, &headers, request.body()?)?;
    let body = answer.body;
    if !answer.status.is_success() {
        let detail: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        bail!(
            "{} ({}): {}",
            detail["__type"].as_str().unwrap_or("error"),
            answer.status,
            detail["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned())
        );
    }
    if let Some(variant) = answer
        .headers
        .get("x-amzn-invoked-production-variant")
        .and_then(|v| v.to_str().ok())
    {
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
    let runtime = Runtime::new(&RuntimeConfig::default())
        .map_err(|e| anyhow!("cannot start the Wasm engine: {e:#}"))?;
    let invocation = Invocation {
        body: request.body()?.into(),
        content_type: request.content_type.clone(),
        accept: request.accept.clone().unwrap_or_default(),
        inference_id: uuid::Uuid::new_v4().to_string(),
        deadline: None,
        custom_attributes: request.custom_attributes.clone(),
    };
    let tokio = tokio::runtime::Runtime::new()?;
    let output = tokio
        .block_on(async {
            let pool = VariantPool::new(&runtime, &spec).await?;
            anyhow::Ok(pool.invoke_here(&invocation).await)
        })?
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

/// `plinth inspect`: each graph's signature and the backends that load it.
fn inspect(
    path: &std::path::Path,
    onnxruntime: &crate::serve::OnnxRuntimeArgs,
) -> anyhow::Result<String> {
    use plinth_runtime::{Backend, Runtime};
    use std::fmt::Write as _;
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| path.display().to_string())?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "onnx"))
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    if files.is_empty() {
        anyhow::bail!(
            "{}: no *.onnx file at its top; a guest loads the graphs there by file stem",
            path.display()
        );
    }
    let runtime = Runtime::new(&onnxruntime.load()?.runtime_config())
        .map_err(|e| anyhow::anyhow!("cannot start the Wasm engine: {e:#}"))?;
    let mut out = String::new();
    for file in files {
        let bytes = std::fs::read(&file).with_context(|| file.display().to_string())?;
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let signature = plinth_runtime::nn::onnx_signature(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "{}: not an ONNX graph tract can read: {e:#}",
                file.display()
            )
        })?;
        let _ = writeln!(out, "graph {name:?} ({})", file.display());
        let _ = writeln!(out, "  load it with Graph::load_by_name({name:?})");
        for (what, tensors) in [
            ("inputs", &signature.inputs),
            ("outputs", &signature.outputs),
        ] {
            let _ = writeln!(out, "  {what}:");
            for t in tensors {
                let _ = writeln!(out, "    {:<24} {}", t.name, t.fact);
            }
        }
        if signature.inputs.len() == 1 {
            let _ = writeln!(
                out,
                "  (one input: compute takes it under any name, but give {:?})",
                signature.inputs[0].name
            );
        }
        let _ = writeln!(out, "  backends:");
        for backend in [Backend::Tract, Backend::OnnxRuntime] {
            let verdict = match runtime.try_load_graph(backend, &bytes) {
                Ok(_) => "loads it".to_string(),
                Err(_) if backend == Backend::OnnxRuntime && runtime.onnxruntime().is_none() => {
                    "not tried: no ONNX Runtime library here (give --onnxruntime PATH or set \
                     ORT_DYLIB_PATH)"
                        .to_string()
                }
                Err(e) => format!("cannot load it: {}", e.lines().next().unwrap_or_default()),
            };
            let _ = writeln!(out, "    {:<12} {verdict}", backend.to_string());
        }
    }
    Ok(out)
}
