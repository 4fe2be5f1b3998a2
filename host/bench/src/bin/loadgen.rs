//! `loadgen`: a closed-loop HTTP/1.1 load generator for Plinth's benchmark. Each of
//! `--connections` tasks holds one keep-alive connection (hyper's low-level client, no pool)
//! and sends one request at a time, the next as soon as the previous answer has been read.
//! After `--warmup` seconds it measures for `--duration` seconds: requests per second,
//! latency percentiles (HDR histogram, microseconds), non-2xx answers, errors, and the
//! production variants named by `x-Amzn-Invoked-Production-Variant`.
//!
//! Output: one human line on stdout; with `--json`, one JSON object on stdout instead and the
//! human line on stderr.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use plinth_bench::summary::{Summary, Tally};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The header Plinth (and SageMaker) use to name the variant that answered.
const VARIANT_HEADER: &str = "x-amzn-invoked-production-variant";

/// How long past the end of the run an in-flight request may take before it counts as an error.
const GRACE: Duration = Duration::from_secs(10);

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

/// Where and what to send, shared by every connection.
struct Target {
    host: String,
    port: u16,
    path: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl Target {
    fn from_args(args: &Args) -> anyhow::Result<Self> {
        let uri: Uri = args
            .url
            .parse()
            .with_context(|| format!("{:?} is not a URL", args.url))?;
        if uri.scheme_str() != Some("http") {
            bail!("only http:// URLs are supported, not {:?}", args.url);
        }
        let authority = uri
            .authority()
            .with_context(|| format!("{:?} has no host", args.url))?
            .clone();
        let path: Uri = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .context("the URL's path")?;
        let mut headers = vec![
            (HOST, HeaderValue::from_str(authority.as_str())?),
            (
                CONTENT_TYPE,
                HeaderValue::from_str(&args.content_type).context("--content-type")?,
            ),
        ];
        for header in &args.headers {
            let (name, value) = header
                .split_once(':')
                .with_context(|| format!("--header {header:?}: expected `Name: value`"))?;
            headers.push((
                HeaderName::from_bytes(name.trim().as_bytes())
                    .with_context(|| format!("--header {header:?}: bad name"))?,
                HeaderValue::from_str(value.trim())
                    .with_context(|| format!("--header {header:?}: bad value"))?,
            ));
        }
        Ok(Self {
            host: authority.host().to_string(),
            port: authority.port_u16().unwrap_or(80),
            path,
            headers,
            body: Bytes::from(args.body.clone()),
        })
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.path.clone();
        let headers = request.headers_mut();
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        request
    }

    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let stream = TcpStream::connect((self.host.as_str(), self.port)).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(async move {
            // Ends when the server closes the connection or the sender is dropped.
            let _ = connection.await;
        });
        Ok(sender)
    }
}

/// The outcome of one request: its status and the variant that answered, if named.
async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<(u16, Option<String>)> {
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let variant = response
        .headers()
        .get(VARIANT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // Read the whole body: the connection is reusable only after that.
    response.into_body().collect().await?;
    Ok((status, variant))
}

/// One connection's closed loop, until `end`. Requests are counted when they complete inside
/// `[measure_from, end]`.
async fn run_connection(target: Arc<Target>, measure_from: Instant, end: Instant) -> Tally {
    let mut tally = Tally::default();
    let in_window = |t: Instant| t >= measure_from && t <= end;
    'connect: while Instant::now() < end {
        let mut sender = match target.connect().await {
            Ok(sender) => sender,
            Err(_) => {
                if in_window(Instant::now()) {
                    tally.errors += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while Instant::now() < end {
            if sender.ready().await.is_err() {
                // The server closed the connection between requests: reconnect.
                continue 'connect;
            }
            let started = Instant::now();
            let outcome =
                tokio::time::timeout_at(end + GRACE, send(&mut sender, target.request())).await;
            let finished = Instant::now();
            match outcome {
                Ok(Ok((status, variant))) => {
                    if in_window(finished) {
                        tally.record(finished - started, status, variant.as_deref());
                    }
                }
                Ok(Err(_)) | Err(_) => {
                    if in_window(finished.min(end)) {
                        tally.errors += 1;
                    }
                    continue 'connect;
                }
            }
        }
    }
    tally
}

async fn run(args: &Args) -> anyhow::Result<Summary> {
    let target = Arc::new(Target::from_args(args)?);
    let warmup = Duration::from_secs_f64(args.warmup.max(0.0));
    let duration = Duration::from_secs_f64(args.duration.max(0.0));
    let measure_from = Instant::now() + warmup;
    let end = measure_from + duration;
    let tasks: Vec<_> = (0..args.connections.max(1))
        .map(|_| tokio::spawn(run_connection(target.clone(), measure_from, end)))
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(&task.await.context("a connection task panicked")?);
    }
    Ok(Summary {
        url: args.url.clone(),
        connections: args.connections.max(1),
        duration,
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
    Ok(())
}
