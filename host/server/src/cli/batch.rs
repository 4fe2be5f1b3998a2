//! `plinth batch`: a transform job from the command line, on a running server (its model
//! named with `--model`; the job resumes there after a restart) or with no server
//! (`--component`: an in-process server over a temporary directory runs it and goes away,
//! its compiled component kept in a cache from run to run), followed with a progress line
//! (records, bytes, throughput, inputs, ETA) and ended with a summary. The job is CreateTransformJob's,
//! whichever runs it: the same splitting, batching, filters, outputs and resuming.

use crate::apply::Control;
use crate::cli::client::Client;
use anyhow::{anyhow, bail, Context};
use clap::Args;
use serde_json::{json, Value};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What `plinth batch` runs.
#[derive(Args)]
pub(crate) struct BatchArgs {
    /// The inputs: an `s3://` prefix (or object), or a local directory (or file).
    #[arg(long)]
    input: String,
    /// Where the `<input>.out` objects go: an `s3://` prefix or a local directory.
    #[arg(long)]
    output: String,
    /// A model of the running server (`--endpoint-url`) to run.
    #[arg(
        long,
        conflicts_with = "component",
        required_unless_present = "component"
    )]
    model: Option<String>,
    /// Run without a server: this component (.wasm), in-process.
    #[arg(long)]
    component: Option<PathBuf>,
    /// With --component: the model artifact directory (mounted at /opt/ml/model).
    #[arg(long, requires = "component")]
    model_data: Option<PathBuf>,
    /// The job's name (default: `batch-` and the time).
    #[arg(long)]
    name: Option<String>,
    /// The inputs' media type (`TransformInput.ContentType`).
    #[arg(long, default_value = "text/csv")]
    content_type: String,
    /// The outputs' media type (`TransformOutput.Accept`; default: the model's).
    #[arg(long)]
    accept: Option<String>,
    /// `SplitType`: Line (each line a record) or None (each input one record).
    #[arg(long, default_value = "Line")]
    split_type: String,
    /// `BatchStrategy`: MultiRecord or SingleRecord.
    #[arg(long, default_value = "MultiRecord")]
    batch_strategy: String,
    /// `MaxPayloadInMB`: the most one request carries.
    #[arg(long)]
    max_payload_mb: Option<u32>,
    /// `MaxConcurrentTransforms`: requests prepared ahead per instance.
    #[arg(long)]
    max_concurrent_transforms: Option<u32>,
    /// `TransformResources.InstanceCount`.
    #[arg(long, default_value_t = 1)]
    instances: u32,
    /// `AssembleWith`: Line or None.
    #[arg(long, default_value = "Line")]
    assemble_with: String,
    /// The inputs are gzip (`CompressionType: Gzip`).
    #[arg(long)]
    gzip: bool,
    /// `DataProcessing.InputFilter` (JSONPath).
    #[arg(long)]
    input_filter: Option<String>,
    /// `DataProcessing.OutputFilter` (JSONPath).
    #[arg(long)]
    output_filter: Option<String>,
    /// `DataProcessing.JoinSource: Input`: each output joined with its input record.
    #[arg(long)]
    join_input: bool,
    /// Print the summary as JSON (DescribeTransformJob's output).
    #[arg(long)]
    json: bool,
    /// With --component: where compiled components are kept from run to run (default:
    /// `$XDG_CACHE_HOME/plinth/compiled`, else `~/.cache/plinth/compiled`).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// With --component: an S3-compatible store's endpoint for `s3://` locations.
    #[arg(long, value_name = "URL", env = "PLINTH_S3_ENDPOINT_URL")]
    s3_endpoint_url: Option<String>,
    #[command(flatten)]
    onnxruntime: crate::serve::OnnxRuntimeArgs,
}

impl BatchArgs {
    /// CreateTransformJob's input for model `model`.
    fn job(&self, name: &str, model: &str) -> Value {
        let mut job = json!({
            "TransformJobName": name,
            "ModelName": model,
            "BatchStrategy": self.batch_strategy,
            "TransformInput": {
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": self.input}},
                "ContentType": self.content_type,
                "SplitType": self.split_type,
                "CompressionType": if self.gzip { "Gzip" } else { "None" },
            },
            "TransformOutput": {"S3OutputPath": self.output, "AssembleWith": self.assemble_with},
            "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": self.instances},
        });
        if let Some(accept) = &self.accept {
            job["TransformOutput"]["Accept"] = json!(accept);
        }
        if let Some(n) = self.max_payload_mb {
            job["MaxPayloadInMB"] = json!(n);
        }
        if let Some(n) = self.max_concurrent_transforms {
            job["MaxConcurrentTransforms"] = json!(n);
        }
        let mut processing = serde_json::Map::new();
        if let Some(f) = &self.input_filter {
            processing.insert("InputFilter".into(), json!(f));
        }
        if let Some(f) = &self.output_filter {
            processing.insert("OutputFilter".into(), json!(f));
        }
        if self.join_input {
            processing.insert("JoinSource".into(), json!("Input"));
        }
        if !processing.is_empty() {
            job["DataProcessing"] = Value::Object(processing);
        }
        job
    }
}

/// Run the job: on the server `client` reaches (with `--model`), or in-process (with
/// `--component`). An error (exit status 1) unless it completed.
pub(crate) fn run(
    args: BatchArgs,
    client: impl FnOnce() -> anyhow::Result<Client>,
) -> anyhow::Result<()> {
    let name = args.name.clone().unwrap_or_else(|| {
        format!(
            "batch-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
        )
    });
    // Local paths as the caller means them, and a local output directory made: the server
    // reads them from its own working directory and needs the directory to exist.
    let mut args = args;
    for path in [&mut args.input, &mut args.output] {
        if !path.starts_with("s3://") {
            *path = std::path::absolute(&*path)
                .with_context(|| format!("cannot resolve {path}"))?
                .display()
                .to_string();
        }
    }
    if !args.output.starts_with("s3://") {
        std::fs::create_dir_all(&args.output)
            .with_context(|| format!("cannot create --output {}", args.output))?;
    }
    let args = args;
    let described = match (&args.model, &args.component) {
        (Some(model), _) => {
            let mut client = client()?;
            let mut call =
                |op: &str, input: Value| client.call(op, input).map_err(|e| anyhow!("{e}"));
            call("CreateTransformJob", args.job(&name, model))?;
            follow(&name, &mut call, Duration::from_millis(250))?
        }
        (None, Some(component)) => in_process(&args, &name, component)?,
        (None, None) => bail!("give --model (a model of the running server) or --component"),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&described)?);
    } else {
        print!("{}", summary(&described));
    }
    match described["TransformJobStatus"].as_str() {
        Some("Completed") => Ok(()),
        other => bail!(
            "transform job {name} ended {}: {}",
            other.unwrap_or("?"),
            described["FailureReason"]
                .as_str()
                .unwrap_or("no reason given")
        ),
    }
}

/// Run the job in an in-process server over a temporary directory.
fn in_process(args: &BatchArgs, name: &str, component: &std::path::Path) -> anyhow::Result<Value> {
    let work = tempfile::tempdir().context("cannot create a temporary directory")?;
    let cache_dir = args.cache_dir.clone().or_else(|| {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|c| c.join("plinth").join("compiled"))
    });
    let settings = crate::serve::Settings {
        runtime: plinth_runtime::RuntimeConfig {
            cache_dir,
            ..args.onnxruntime.load()?.runtime_config()
        },
        s3: plinth_storage::S3Settings::from_env(args.s3_endpoint_url.clone())
            .map_err(|e| anyhow!(e))?,
        ..crate::serve::Settings::default()
    };
    let tokio = tokio::runtime::Runtime::new()?;
    let server = tokio.block_on(crate::serve::start(
        crate::serve::StateLocation::InMemory {
            artifacts: work.path().to_path_buf(),
        },
        settings,
    ))?;
    let fleet = server.fleet.clone();
    let mut call = |op: &str, input: Value| {
        tokio
            .block_on(crate::ops::call(&fleet, op, input))
            .map_err(|e| anyhow!("{}", e.message()))
    };
    let absolute = |p: &std::path::Path| std::path::absolute(p).map(|p| p.display().to_string());
    let mut container = json!({ "Image": absolute(component)? });
    if let Some(dir) = &args.model_data {
        container["ModelDataUrl"] = json!(absolute(dir)?);
    }
    call(
        "CreateModel",
        json!({ "ModelName": "batch", "PrimaryContainer": container }),
    )?;
    call("CreateTransformJob", args.job(name, "batch"))?;
    // A look in-process costs nothing: its end is seen at once.
    let described = follow(name, &mut call, Duration::from_millis(10));
    drop(server);
    tokio.shutdown_background();
    described
}

/// Follow job `name` to its end, looking every `every`, a progress line on a terminal's
/// stderr meanwhile (at most four times a second); its last DescribeTransformJob.
fn follow(
    name: &str,
    call: &mut impl FnMut(&str, Value) -> anyhow::Result<Value>,
    every: Duration,
) -> anyhow::Result<Value> {
    let started = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let mut shown: Option<Instant> = None;
    loop {
        let described = call("DescribeTransformJob", json!({ "TransformJobName": name }))?;
        let status = described["TransformJobStatus"].as_str().unwrap_or_default();
        let ended = matches!(status, "Completed" | "Failed" | "Stopped");
        let show = ended || shown.is_none_or(|t| t.elapsed() >= Duration::from_millis(250));
        if terminal && show {
            shown = Some(Instant::now());
            eprint!(
                "\r\x1b[2K{}",
                progress_line(&described["PlinthProgress"], started.elapsed())
            );
            let _ = std::io::stderr().flush();
        }
        if ended {
            if terminal {
                eprintln!();
            }
            let mut described = described;
            described["PlinthSeconds"] = json!(started.elapsed().as_secs_f64());
            return Ok(described);
        }
        std::thread::sleep(every);
    }
}

/// A size in bytes, for people.
fn bytes(n: f64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut n = n;
    let mut unit = 0;
    while n >= 1000.0 && unit + 1 < units.len() {
        n /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n:.0} {}", units[unit])
    } else {
        format!("{n:.1} {}", units[unit])
    }
}

/// The progress line: records, bytes of the total, records per second, inputs, ETA.
fn progress_line(p: &Value, elapsed: Duration) -> String {
    let n = |k: &str| p[k].as_f64().unwrap_or(0.0);
    let seconds = elapsed.as_secs_f64().max(1e-3);
    let (done, total) = (n("BytesCompleted"), n("BytesTotal"));
    let eta = if total > 0.0 && done > 0.0 && done < total {
        format!(", ETA {:.0} s", (total - done) / (done / seconds))
    } else {
        String::new()
    };
    let share = if total > 0.0 {
        format!(" of {} ({:.0}%)", bytes(total), 100.0 * done / total)
    } else {
        String::new()
    };
    format!(
        "{:.0} records, {}{share}, {:.0} records/s, inputs {:.0}/{:.0}{eta}",
        n("RecordsCompleted"),
        bytes(done),
        n("RecordsCompleted") / seconds,
        n("InputsCompleted"),
        n("Inputs"),
    )
}

/// What the job did, for people.
fn summary(d: &Value) -> String {
    let p = &d["PlinthProgress"];
    let n = |k: &str| p[k].as_f64().unwrap_or(0.0);
    let seconds = d["PlinthSeconds"].as_f64().unwrap_or(0.0).max(1e-3);
    let mut out = format!(
        "transform job {}: {}\n  {:.0} of {:.0} inputs, {:.0} records, {} in {seconds:.1} s \
         ({:.0} records/s, {}/s)\n  outputs: {}\n",
        d["TransformJobName"].as_str().unwrap_or_default(),
        d["TransformJobStatus"].as_str().unwrap_or_default(),
        n("InputsCompleted"),
        n("Inputs"),
        n("RecordsCompleted"),
        bytes(n("BytesCompleted")),
        n("RecordsCompleted") / seconds,
        bytes(n("BytesCompleted") / seconds),
        d["TransformOutput"]["S3OutputPath"]
            .as_str()
            .unwrap_or_default(),
    );
    if let Some(reason) = d["FailureReason"].as_str() {
        out.push_str(&format!("  failure: {reason}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_says_records_bytes_rate_inputs_and_eta() {
        let p = json!({"Inputs": 4, "InputsCompleted": 1, "RecordsCompleted": 5000,
                       "BytesCompleted": 250000, "BytesTotal": 1000000});
        let line = progress_line(&p, Duration::from_secs(2));
        assert_eq!(
            line,
            "5000 records, 250.0 KB of 1.0 MB (25%), 2500 records/s, inputs 1/4, ETA 6 s"
        );
    }

    #[test]
    fn the_summary_names_the_status_counts_and_failure() {
        let d = json!({"TransformJobName": "j", "TransformJobStatus": "Failed",
                       "FailureReason": "Too much data for max payload size",
                       "TransformOutput": {"S3OutputPath": "/out"}, "PlinthSeconds": 2.0,
                       "PlinthProgress": {"Inputs": 2, "InputsCompleted": 1,
                                          "RecordsCompleted": 10, "BytesCompleted": 100}});
        let text = summary(&d);
        assert!(text.starts_with("transform job j: Failed\n  1 of 2 inputs, 10 records, 100 B in 2.0 s (5 records/s, 50 B/s)"), "{text}");
        assert!(
            text.contains("failure: Too much data for max payload size"),
            "{text}"
        );
    }
}
