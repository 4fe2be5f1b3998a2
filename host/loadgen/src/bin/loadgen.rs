//! `loadgen`: a closed-loop HTTP/1.1 load generator for Plinth's benchmark. Each of
//! `--connections` tasks holds one keep-alive connection (hyper's low-level client, no pool)
//! and sends one request at a time, the next as soon as the previous answer has been read.
//! After `--warmup` seconds it measures for `--duration` seconds: requests per second,
//! latency percentiles (HDR histogram, microseconds), non-2xx answers, errors, and the
//! production variants named by `x-Amzn-Invoked-Production-Variant`. The engine is
//! `plinth_loadgen::load`, shared with `plinth bench`.
//!
//! Output: one human line on stdout; with `--json`, one JSON object on stdout instead and the
//! human line on stderr. The first few error messages, if any, go to stderr.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use plinth_loadgen::load::{self, Load, Plan, Target};
use plinth_loadgen::summary::Summary;

/// A closed-loop HTTP load generator.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The full URL to POST to, e.g. http://127.0.0.1:8080/endpoints/iris/invocations.
    #[arg(long)]
    url: String,
    /// The request body.
    #[arg(long, default_value = "5.1,3.5,1.4,0.2")]
    body: String,
    /// The request's Content-Type.
    #[arg(long, default_value = "text/csv")]
    content_type: String,
    /// Concurrent keep-alive connections, each with one request in flight.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Seconds to measure for.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds to run before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Tokio worker threads of the generator (1: a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// An extra request header, `Name: value`; repeatable.
    #[arg(long = "header", value_name = "K:V")]
    headers: Vec<String>,
    /// Print one JSON object on stdout (and the human line on stderr).
    #[arg(long)]
    json: bool,
}

fn target(args: &Args) -> anyhow::Result<Target> {
    let mut target = Target::new(&args.url, &args.content_type, args.body.clone())?;
    for line in &args.headers {
        let (name, value) =
            load::parse_header(line).map_err(|e| anyhow::anyhow!("--header {line:?}: {e:#}"))?;
        target = target
            .header(&name, &value)
            .map_err(|e| anyhow::anyhow!("--header {line:?}: {e:#}"))?;
    }
    Ok(target)
}

async fn run(args: &Args) -> anyhow::Result<Summary> {
    let target = Arc::new(target(args)?);
    let connections = args.connections.max(1);
    let plan = Plan {
        load: Load::Concurrency(connections),
        warmup: Duration::from_secs_f64(args.warmup.max(0.0)),
        duration: Duration::from_secs_f64(args.duration.max(0.0)),
        max_in_flight: connections,
    };
    let tally = load::run(target, &plan, &mut |_| {}).await?;
    Ok(Summary {
        url: args.url.clone(),
        connections,
        duration: plan.duration,
        tally,
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    let summary = runtime.block_on(run(&args))?;
    if args.json {
        eprintln!("{}", summary.human_line());
        println!("{}", summary.to_json());
    } else {
        println!("{}", summary.human_line());
    }
    for message in &summary.tally.messages {
        eprintln!("error: {message}");
    }
    Ok(())
}
