//! `plinth bench`: load-tests an endpoint (SageMaker's Inference Recommender, for Plinth).
//! It drives `--endpoint NAME` on the server at `--endpoint-url` (or any `--url` speaking
//! InvokeEndpoint) with the load engine of `plinth-loadgen` — closed loop at each
//! `--concurrency`, or open loop at each `--rate` — for `--duration` seconds after a
//! `--warmup`, with a progress bar per run, and reports requests/s, latency percentiles,
//! errors and the variant split as a table or (`--json`) one JSON document.
//!
//! With `--variant V --instances 1,2,4` it sweeps instance counts: for each count it calls
//! UpdateEndpointWeightsAndCapacities, waits for DescribeEndpoint to say `InService` with the
//! count reached, and runs every load; at the end (also after an error or Ctrl-C) it puts the
//! variant's original instance count back. With `--latency-target-ms` it recommends the
//! smallest instance count (or, without a sweep, the highest load) whose latency at
//! `--percentile` meets the target with no errors.
//!
//! This module owns the flags, their checks, the control-plane steps and the output; the
//! engine, the recommendation and the table are in `plinth_loadgen::{load, report}`.

use crate::apply::{CallError, Control};
use crate::cli::client::Client;
use crate::sigv4::{self, Credential};
use anyhow::{anyhow, bail, Context};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use plinth_loadgen::load::{self, HeaderHook, Load, Plan, Snapshot, Target};
use plinth_loadgen::report::{self, Criterion, Run};
use plinth_loadgen::summary::Tally;
use serde_json::{json, Value};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// How long the test request before the load may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(70);

/// How long an instance count change may take to reach `InService`.
const SCALE_TIMEOUT: Duration = Duration::from_secs(600);

/// The time between two DescribeEndpoint calls while waiting.
const POLL: Duration = Duration::from_millis(200);

/// `plinth bench`'s own flags (the server's address and credentials are `ServerArgs`).
#[derive(clap::Args)]
pub(crate) struct BenchArgs {
    /// The endpoint to load, on the server at --endpoint-url (checked with DescribeEndpoint
    /// first).
    #[arg(long, required_unless_present = "url", conflicts_with = "url")]
    endpoint: Option<String>,
    /// Or a full InvokeEndpoint URL (http://), e.g.
    /// http://127.0.0.1:8080/endpoints/iris/invocations.
    #[arg(long)]
    url: Option<String>,
    #[command(flatten)]
    body: crate::cli::body::BodyArgs,
    /// `Content-Type` of the body.
    #[arg(long, default_value = "text/csv")]
    content_type: String,
    /// For a multi-model endpoint: the model every request names (`TargetModel`).
    #[arg(long)]
    target_model: Option<String>,
    /// A header every request carries, `NAME:VALUE` (repeatable), e.g.
    /// `X-Amzn-SageMaker-InputLocation:s3://bucket/in.csv` with --url on an endpoint's
    /// `async-invocations`.
    #[arg(long = "header", value_name = "NAME:VALUE")]
    headers: Vec<String>,
    /// Closed loop: connections, each with one request in flight; a comma list is a sweep
    /// (default 1).
    #[arg(long, value_delimiter = ',', conflicts_with = "rate")]
    concurrency: Vec<usize>,
    /// Open loop: requests started per second, latency measured from each one's scheduled
    /// start; a comma list is a sweep.
    #[arg(long, value_delimiter = ',')]
    rate: Vec<f64>,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring, per run.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Open loop: requests in flight at most; a request due beyond it is dropped (counted).
    #[arg(long, default_value_t = load::DEFAULT_MAX_IN_FLIGHT)]
    max_in_flight: usize,
    /// The production variant whose instance count --instances sweeps.
    #[arg(long, requires = "instances", conflicts_with = "url")]
    variant: Option<String>,
    /// Instance counts to sweep (comma list), set with UpdateEndpointWeightsAndCapacities;
    /// the original count is restored at the end.
    #[arg(long, value_delimiter = ',', requires = "variant")]
    instances: Vec<u32>,
    /// Recommend the smallest instance count (or the highest load) whose latency at
    /// --percentile is at most this, with no errors.
    #[arg(long)]
    latency_target_ms: Option<f64>,
    /// The latency percentile compared with --latency-target-ms.
    #[arg(long, default_value_t = 99.0)]
    percentile: f64,
    /// Print one JSON document (the runs and the recommendation) instead of the table.
    #[arg(long)]
    json: bool,
}

/// The server `plinth bench` talks to: its address and how to sign.
pub(crate) struct Server {
    /// `--endpoint-url`.
    pub(crate) endpoint_url: String,
    /// The key pair to sign with, if any.
    pub(crate) credential: Option<Credential>,
    /// The region to sign for.
    pub(crate) region: String,
}

/// The instance sweep: which variant of which endpoint, and its count before the sweep.
struct Sweep {
    endpoint: String,
    variant: String,
    original: u64,
}

/// The flags, checked.
struct Settings {
    loads: Vec<Load>,
    counts: Vec<Option<u32>>,
    warmup: Duration,
    duration: Duration,
    criterion: Option<Criterion>,
}

impl BenchArgs {
    fn settings(&self) -> anyhow::Result<Settings> {
        if !(self.duration.is_finite() && self.duration > 0.0) {
            bail!(
                "--duration must be a positive number of seconds, not {}",
                self.duration
            );
        }
        if !(self.warmup.is_finite() && self.warmup >= 0.0) {
            bail!(
                "--warmup must be 0 or a positive number of seconds, not {}",
                self.warmup
            );
        }
        if !(self.percentile > 0.0 && self.percentile <= 100.0) {
            bail!(
                "--percentile must be above 0 and at most 100, not {}",
                self.percentile
            );
        }
        if self.max_in_flight == 0 {
            bail!("--max-in-flight must be at least 1");
        }
        let loads = if !self.rate.is_empty() {
            if let Some(bad) = self.rate.iter().find(|r| !(r.is_finite() && **r > 0.0)) {
                bail!("--rate must be positive numbers of requests per second, not {bad}");
            }
            self.rate.iter().map(|&r| Load::Rate(r)).collect()
        } else if !self.concurrency.is_empty() {
            if self.concurrency.contains(&0) {
                bail!("--concurrency must be at least 1");
            }
            self.concurrency
                .iter()
                .map(|&n| Load::Concurrency(n))
                .collect()
        } else {
            vec![Load::Concurrency(1)]
        };
        if self.instances.contains(&0) {
            bail!("--instances must be at least 1: a variant with 0 instances serves nothing");
        }
        let criterion = match self.latency_target_ms {
            Some(target) if !(target.is_finite() && target > 0.0) => {
                bail!("--latency-target-ms must be a positive number, not {target}")
            }
            Some(target_ms) => Some(Criterion {
                percentile: self.percentile,
                target_ms,
            }),
            None => None,
        };
        let counts = if self.instances.is_empty() {
            vec![None]
        } else {
            self.instances.iter().map(|&n| Some(n)).collect()
        };
        Ok(Settings {
            loads,
            counts,
            warmup: Duration::from_secs_f64(self.warmup),
            duration: Duration::from_secs_f64(self.duration),
            criterion,
        })
    }
}

/// `plinth bench`: check, load, report, restore.
pub(crate) fn run(args: &BenchArgs, mut client: Client, server: &Server) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let body = args.body.read()?;
    let url = match (&args.endpoint, &args.url) {
        (Some(endpoint), _) => format!(
            "{}/endpoints/{endpoint}/invocations",
            server.endpoint_url.trim_end_matches('/')
        ),
        (None, Some(url)) => url.clone(),
        (None, None) => bail!("give --endpoint NAME or --url URL"),
    };
    let mut target = Target::new(&url, &args.content_type, body)
        .with_context(|| format!("cannot load {url}"))?;
    if let Some(model) = &args.target_model {
        target = target.header("x-amzn-sagemaker-target-model", model)?;
    }
    for header in &args.headers {
        let Some((name, value)) = header.split_once(':') else {
            bail!("--header {header:?}: give NAME:VALUE");
        };
        target = target.header(name.trim(), value.trim())?;
    }
    if let Some(credential) = &server.credential {
        let hook = signer(&target, credential, &server.region, &args.content_type);
        target = target.with_hook(hook);
    }
    let target = Arc::new(target);

    // Before any load: the endpoint exists and serves, and the variant to sweep is there.
    let sweep = match &args.endpoint {
        Some(endpoint) => check_endpoint(&mut client, endpoint, args.variant.as_deref(), server)?,
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let answer = runtime.block_on(load::probe(&target, PROBE_TIMEOUT))?;
    if !(200..300).contains(&answer.status) {
        bail!("{url} refused a test request: {}", answer.describe());
    }

    let (stop_tx, stop) = watch::channel(false);
    runtime.spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = stop_tx.send(true);
            eprintln!("interrupted: stopping (Ctrl-C again to quit at once)");
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });

    let show_bar = !args.json && std::io::stdout().is_terminal();
    let mut runs = Vec::new();
    let mut scaled = false;
    let outcome = sweep_and_run(
        &mut Runner {
            client: &mut client,
            runtime: &runtime,
            target: &target,
            stop: &stop,
            show_bar,
            max_in_flight: args.max_in_flight,
        },
        &settings,
        sweep.as_ref(),
        &mut runs,
        &mut scaled,
    );
    let restored = match &sweep {
        Some(sweep) if scaled => restore(&mut client, sweep),
        _ => Ok(()),
    };

    if !runs.is_empty() {
        let recommendation = settings
            .criterion
            .map(|c| report::recommend(&runs, &c, args.variant.as_deref()));
        if args.json {
            let document = json!({
                "url": url,
                "endpoint": args.endpoint,
                "variant": args.variant,
                "mode": if args.rate.is_empty() { "closed" } else { "open" },
                "warmup_s": settings.warmup.as_secs_f64(),
                "duration_s": settings.duration.as_secs_f64(),
                "percentile": args.percentile,
                "latency_target_ms": args.latency_target_ms,
                "original_instances": sweep.as_ref().map(|s| s.original),
                "runs": runs
                    .iter()
                    .map(|r| r.to_json(args.percentile, settings.criterion.as_ref()))
                    .collect::<Vec<_>>(),
                "recommendation": recommendation.as_ref().map(report::Recommendation::to_json),
            });
            println!("{}", serde_json::to_string_pretty(&document)?);
        } else {
            print!("{}", report::table(&runs, args.percentile));
            if let Some(recommendation) = &recommendation {
                println!("recommendation: {}", recommendation.message);
            }
        }
    }

    match (outcome, restored) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(e), Ok(())) => Err(e),
        (Ok(()), Err(r)) => Err(r),
        (Err(e), Err(r)) => Err(anyhow!("{e:#}; and {r:#}")),
    }
}

/// The pieces every run uses.
struct Runner<'a> {
    client: &'a mut Client,
    runtime: &'a tokio::runtime::Runtime,
    target: &'a Arc<Target>,
    stop: &'a watch::Receiver<bool>,
    show_bar: bool,
    max_in_flight: usize,
}

/// Every instance count (if any) times every load; the runs go to `runs` as they finish.
fn sweep_and_run(
    cx: &mut Runner<'_>,
    settings: &Settings,
    sweep: Option<&Sweep>,
    runs: &mut Vec<Run>,
    scaled: &mut bool,
) -> anyhow::Result<()> {
    for &count in &settings.counts {
        if let (Some(count), Some(sweep)) = (count, sweep) {
            eprintln!(
                "setting variant {} of {} to {count} instance(s)",
                sweep.variant, sweep.endpoint
            );
            *scaled = true;
            set_count(cx.client, sweep, u64::from(count))?;
            let took = wait_for_count(cx.client, sweep, u64::from(count), Some(cx.stop))?;
            eprintln!(
                "variant {} InService with {count} instance(s) after {:.1} s",
                sweep.variant,
                took.as_secs_f64()
            );
        }
        for &load in &settings.loads {
            if *cx.stop.borrow() {
                bail!("interrupted");
            }
            let plan = Plan {
                load,
                warmup: settings.warmup,
                duration: settings.duration,
                max_in_flight: cx.max_in_flight,
            };
            let label = match count {
                Some(n) => format!("{n} inst, {load}"),
                None => load.to_string(),
            };
            let tally = cx.runtime.block_on(measure(
                cx.target.clone(),
                &plan,
                &label,
                cx.show_bar,
                cx.stop.clone(),
            ))?;
            let Some(tally) = tally else {
                bail!("interrupted");
            };
            runs.push(Run {
                instances: count,
                load,
                duration: settings.duration,
                tally,
            });
        }
    }
    Ok(())
}

/// One run with its progress bar; `None` if interrupted.
async fn measure(
    target: Arc<Target>,
    plan: &Plan,
    label: &str,
    show_bar: bool,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<Tally>> {
    let bar = if show_bar {
        new_bar(plan, label)?
    } else {
        ProgressBar::hidden()
    };
    let mut progress = |s: &Snapshot| {
        bar.set_position(u64::try_from(s.elapsed.as_millis()).unwrap_or(u64::MAX));
        bar.set_message(progress_line(s, plan));
    };
    let result = tokio::select! {
        tally = load::run(target, plan, &mut progress) => tally.map(Some),
        () = stopped(stop) => Ok(None),
    };
    bar.finish_and_clear();
    result
}

/// Resolves once Ctrl-C was pressed (never, if the listener is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    if stop.wait_for(|stopped| *stopped).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn new_bar(plan: &Plan, label: &str) -> anyhow::Result<ProgressBar> {
    let total = plan.warmup + plan.duration;
    let bar = ProgressBar::with_draw_target(
        Some(u64::try_from(total.as_millis()).unwrap_or(u64::MAX)),
        ProgressDrawTarget::stdout(),
    );
    bar.set_style(
        ProgressStyle::with_template("{prefix} {bar:30.cyan/blue} {msg}")?.progress_chars("#>-"),
    );
    bar.set_prefix(label.to_string());
    Ok(bar)
}

/// `3.2/10 s  12345 requests  2841 req/s  0 errors`, or `warm-up 1.2/2 s  2841 req/s`.
fn progress_line(s: &Snapshot, plan: &Plan) -> String {
    if s.warming_up {
        return format!(
            "warm-up {:.1}/{} s  {:.0} req/s",
            s.elapsed.as_secs_f64(),
            plan.warmup.as_secs_f64(),
            s.rps
        );
    }
    let measured = s.elapsed.saturating_sub(plan.warmup);
    let mut line = format!(
        "{:.1}/{} s  {} requests  {:.0} req/s  {} errors",
        measured.as_secs_f64(),
        plan.duration.as_secs_f64(),
        s.requests,
        s.rps,
        s.errors + s.non_2xx
    );
    if s.dropped > 0 {
        line.push_str(&format!("  {} dropped", s.dropped));
    }
    line
}

/// Signs every request with SigV4 as the `plinth` client does (service `sagemaker`).
fn signer(
    target: &Target,
    credential: &Credential,
    region: &str,
    content_type: &str,
) -> HeaderHook {
    let credential = credential.clone();
    let region = region.to_string();
    let host = target.authority().to_string();
    let path = target.path_and_query().to_string();
    let content_type = content_type.to_string();
    Arc::new(move |body: &[u8]| {
        sigv4::sign(
            &credential,
            &region,
            "POST",
            &host,
            &path,
            &[("content-type", content_type.as_str())],
            body,
            SystemTime::now(),
        )
    })
}

/// DescribeEndpoint, with the failures a user can act on said plainly.
fn describe(client: &mut Client, endpoint: &str, base: &str) -> anyhow::Result<Value> {
    client
        .call("DescribeEndpoint", json!({ "EndpointName": endpoint }))
        .map_err(|e| explain(e, endpoint, base))
}

fn explain(e: CallError, endpoint: &str, base: &str) -> anyhow::Error {
    if e.code == "ConnectionError" {
        anyhow!(
            "{} (is Plinth running there? --endpoint-url or PLINTH_ENDPOINT_URL sets its address)",
            e.message
        )
    } else if e.code == "ValidationException" && e.message.starts_with("Could not find") {
        anyhow!(
            "endpoint {endpoint} does not exist on {base} ({}); `plinth api ListEndpoints` \
             lists the endpoints",
            e.message
        )
    } else {
        anyhow!("DescribeEndpoint {endpoint}: {}: {}", e.code, e.message)
    }
}

/// Checks that the endpoint serves; for a sweep, waits for it to settle and reads the
/// variant's instance count.
fn check_endpoint(
    client: &mut Client,
    endpoint: &str,
    variant: Option<&str>,
    server: &Server,
) -> anyhow::Result<Option<Sweep>> {
    let mut description = describe(client, endpoint, &server.endpoint_url)?;
    let Some(variant) = variant else {
        let status = description["EndpointStatus"].as_str().unwrap_or_default();
        if !matches!(status, "InService" | "Updating" | "RollingBack") {
            bail!(
                "endpoint {endpoint} is {status}{}: it does not serve requests",
                reason(&description)
            );
        }
        return Ok(None);
    };
    let started = Instant::now();
    loop {
        let status = description["EndpointStatus"].as_str().unwrap_or_default();
        match status {
            "InService" => break,
            "Creating" | "Updating" | "RollingBack" if started.elapsed() < SCALE_TIMEOUT => {}
            _ => bail!(
                "endpoint {endpoint} is {status}{}: an instance sweep needs it InService",
                reason(&description)
            ),
        }
        std::thread::sleep(POLL);
        description = describe(client, endpoint, &server.endpoint_url)?;
    }
    let original = find_variant(&description, endpoint, variant)?["CurrentInstanceCount"]
        .as_u64()
        .with_context(|| {
            format!("DescribeEndpoint {endpoint}: no CurrentInstanceCount for variant {variant}")
        })?;
    Ok(Some(Sweep {
        endpoint: endpoint.to_string(),
        variant: variant.to_string(),
        original,
    }))
}

/// `: <FailureReason>` when there is one.
fn reason(description: &Value) -> String {
    description["FailureReason"]
        .as_str()
        .map_or(String::new(), |r| format!(" ({r})"))
}

fn find_variant<'a>(
    description: &'a Value,
    endpoint: &str,
    variant: &str,
) -> anyhow::Result<&'a Value> {
    let variants = description["ProductionVariants"].as_array();
    variants
        .into_iter()
        .flatten()
        .find(|v| v["VariantName"].as_str() == Some(variant))
        .ok_or_else(|| {
            let names: Vec<&str> = variants
                .into_iter()
                .flatten()
                .filter_map(|v| v["VariantName"].as_str())
                .collect();
            anyhow!(
                "endpoint {endpoint} has no production variant {variant} (it has {})",
                names.join(", ")
            )
        })
}

fn set_count(client: &mut Client, sweep: &Sweep, count: u64) -> anyhow::Result<()> {
    client
        .call(
            "UpdateEndpointWeightsAndCapacities",
            json!({
                "EndpointName": sweep.endpoint,
                "DesiredWeightsAndCapacities": [
                    { "VariantName": sweep.variant, "DesiredInstanceCount": count }
                ],
            }),
        )
        .map_err(|e| {
            anyhow!(
                "cannot set variant {} of {} to {count} instances: {}: {}",
                sweep.variant,
                sweep.endpoint,
                e.code,
                e.message
            )
        })?;
    Ok(())
}

/// Waits until the endpoint is InService with `count` instances of the variant; an error if
/// the change failed, takes over [`SCALE_TIMEOUT`], or (with `stop`) Ctrl-C is pressed.
fn wait_for_count(
    client: &mut Client,
    sweep: &Sweep,
    count: u64,
    stop: Option<&watch::Receiver<bool>>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let (endpoint, variant) = (&sweep.endpoint, &sweep.variant);
    loop {
        let description = client
            .call("DescribeEndpoint", json!({ "EndpointName": endpoint }))
            .map_err(|e| anyhow!("DescribeEndpoint {endpoint}: {}: {}", e.code, e.message))?;
        let status = description["EndpointStatus"].as_str().unwrap_or_default();
        let current =
            find_variant(&description, endpoint, variant)?["CurrentInstanceCount"].as_u64();
        match status {
            "InService" if current == Some(count) => return Ok(started.elapsed()),
            "InService" if description["FailureReason"].is_string() => bail!(
                "variant {variant} of {endpoint} did not reach {count} instances{}",
                reason(&description)
            ),
            "Failed" => bail!("endpoint {endpoint} failed{}", reason(&description)),
            _ => {}
        }
        if stop.is_some_and(|s| *s.borrow()) {
            bail!("interrupted");
        }
        if started.elapsed() > SCALE_TIMEOUT {
            bail!(
                "variant {variant} of {endpoint} did not reach {count} instances within {} s \
                 (the endpoint is {status} with {})",
                SCALE_TIMEOUT.as_secs(),
                current.map_or("?".to_string(), |c| c.to_string())
            );
        }
        std::thread::sleep(POLL);
    }
}

/// Puts the variant's original instance count back (waiting for a change in progress first).
fn restore(client: &mut Client, sweep: &Sweep) -> anyhow::Result<()> {
    let attempt = |client: &mut Client| -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let description = describe(client, &sweep.endpoint, "the server")?;
            let status = description["EndpointStatus"].as_str().unwrap_or_default();
            if status == "InService" {
                break;
            }
            if started.elapsed() > SCALE_TIMEOUT {
                bail!("the endpoint is still {status}");
            }
            std::thread::sleep(POLL);
        }
        set_count(client, sweep, sweep.original)?;
        wait_for_count(client, sweep, sweep.original, None)?;
        Ok(())
    };
    attempt(client).map_err(|e| {
        anyhow!(
            "could not restore variant {} of {} to {} instances: {e:#}",
            sweep.variant,
            sweep.endpoint,
            sweep.original
        )
    })?;
    eprintln!(
        "variant {} of {} restored to {} instance(s)",
        sweep.variant, sweep.endpoint, sweep.original
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|c| c.bench)
    }

    fn settings(args: &[&str]) -> anyhow::Result<Settings> {
        parse(args).expect("valid flags").settings()
    }

    #[test]
    fn flags_become_loads_and_counts() {
        let s = settings(&["--endpoint", "e", "--body", "x"]).unwrap();
        assert_eq!(s.loads, [Load::Concurrency(1)]);
        assert_eq!(s.counts, [None]);
        assert_eq!(s.duration, Duration::from_secs(10));
        assert_eq!(s.warmup, Duration::from_secs(2));
        assert!(s.criterion.is_none());

        let s = settings(&[
            "--endpoint",
            "e",
            "--body",
            "x",
            "--concurrency",
            "1,4,16",
            "--variant",
            "A",
            "--instances",
            "1,2",
            "--latency-target-ms",
            "50",
            "--percentile",
            "90",
            "--duration",
            "0.5",
            "--warmup",
            "0",
        ])
        .unwrap();
        assert_eq!(
            s.loads,
            [
                Load::Concurrency(1),
                Load::Concurrency(4),
                Load::Concurrency(16)
            ]
        );
        assert_eq!(s.counts, [Some(1), Some(2)]);
        assert_eq!(s.duration, Duration::from_millis(500));
        assert_eq!(s.warmup, Duration::ZERO);
        assert_eq!(
            s.criterion,
            Some(Criterion {
                percentile: 90.0,
                target_ms: 50.0
            })
        );

        let s = settings(&["--url", "http://h/", "--body", "x", "--rate", "10,100.5"]).unwrap();
        assert_eq!(s.loads, [Load::Rate(10.0), Load::Rate(100.5)]);
    }

    #[test]
    fn bad_flag_combinations_are_refused() {
        for args in [
            &["--body", "x"][..],                                      // no target
            &["--endpoint", "e", "--url", "http://h/", "--body", "x"], // both targets
            &["--endpoint", "e"],                                      // no body
            &["--endpoint", "e", "--body", "x", "--body-file", "f"],   // two bodies
            &[
                "--endpoint",
                "e",
                "--body",
                "x",
                "--concurrency",
                "1",
                "--rate",
                "5",
            ],
            &["--endpoint", "e", "--body", "x", "--instances", "1,2"], // no variant
            &["--endpoint", "e", "--body", "x", "--variant", "A"],     // no instances
            &[
                "--url",
                "http://h/",
                "--body",
                "x",
                "--variant",
                "A",
                "--instances",
                "1",
            ],
            &["--endpoint", "e", "--body", "x", "--concurrency", "two"],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
        for (args, message) in [
            (
                &["--concurrency", "0"][..],
                "--concurrency must be at least 1",
            ),
            (&["--rate", "0"], "--rate must be positive"),
            (&["--duration", "0"], "--duration must be a positive number"),
            (&["--warmup=-1"], "--warmup must be 0 or"),
            (&["--percentile", "0"], "--percentile must be above 0"),
            (&["--percentile", "101"], "--percentile must be above 0"),
            (&["--latency-target-ms", "0"], "--latency-target-ms must be"),
            (
                &["--max-in-flight", "0"],
                "--max-in-flight must be at least 1",
            ),
            (
                &["--variant", "A", "--instances", "0,1"],
                "--instances must be at least 1",
            ),
        ] {
            let mut all = vec!["--endpoint", "e", "--body", "x"];
            all.extend_from_slice(args);
            let error = settings(&all)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.contains(message), "{args:?}: {error:?}");
        }
    }

    #[test]
    fn progress_lines() {
        let plan = Plan {
            load: Load::Concurrency(1),
            warmup: Duration::from_secs(2),
            duration: Duration::from_secs(10),
            max_in_flight: 1,
        };
        let warming = Snapshot {
            elapsed: Duration::from_millis(1200),
            warming_up: true,
            rps: 99.6,
            ..Snapshot::default()
        };
        assert_eq!(progress_line(&warming, &plan), "warm-up 1.2/2 s  100 req/s");
        let measuring = Snapshot {
            elapsed: Duration::from_millis(5200),
            requests: 1234,
            errors: 1,
            non_2xx: 2,
            dropped: 4,
            rps: 400.0,
            ..Snapshot::default()
        };
        assert_eq!(
            progress_line(&measuring, &plan),
            "3.2/10 s  1234 requests  400 req/s  3 errors  4 dropped"
        );
    }

    #[test]
    fn missing_variants_are_named() {
        let description =
            json!({"ProductionVariants": [{"VariantName": "A"}, {"VariantName": "B"}]});
        assert!(find_variant(&description, "e", "B").is_ok());
        let error = find_variant(&description, "e", "C")
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "endpoint e has no production variant C (it has A, B)"
        );
    }

    #[test]
    fn control_plane_failures_are_explained() {
        let not_found = CallError {
            code: "ValidationException".into(),
            message: "Could not find endpoint \"arn:...:endpoint/nope\".".into(),
        };
        let text = explain(not_found, "nope", "http://h:1").to_string();
        assert!(
            text.starts_with("endpoint nope does not exist on http://h:1"),
            "{text}"
        );
        let unreachable = CallError {
            code: "ConnectionError".into(),
            message: "cannot reach http://h:1: connection refused".into(),
        };
        assert!(explain(unreachable, "e", "http://h:1")
            .to_string()
            .contains("is Plinth running there?"));
    }
}
