//! `native-iris-batch`: the native reference for Plinth's batch transform benchmark. It does
//! in one process, with tract and no WebAssembly, the work a transform job of Plinth's iris
//! plugin does for a CSV input split by line with `MultiRecord` batches: read the file,
//! pack whole lines into requests of at most `--max-payload-mb`, parse each request's rows,
//! run the model on them, write each row's `label,p0,p1,p2` line (as the plugin answers
//! `text/csv`) to the output file. One thread, like one instance.

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use plinth_bench::iris;
use tract_onnx::prelude::*;

/// The same allocator as `plinth`, so that the comparison is of the work itself.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The ONNX model: input f32 [N,4], output probabilities f32 [N,3].
    #[arg(long, default_value = "examples/iris/model/model.onnx")]
    model: PathBuf,
    /// The input: CSV rows of 4 features.
    #[arg(long)]
    input: PathBuf,
    /// Where the predictions go.
    #[arg(long)]
    output: PathBuf,
    /// The most bytes of rows one model run takes, in MiB (as `MaxPayloadInMB`).
    #[arg(long, default_value_t = 6)]
    max_payload_mb: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let plan = tract_onnx::onnx()
        .model_for_path(&args.model)
        .with_context(|| format!("cannot read the ONNX model {}", args.model.display()))?
        .into_optimized()?
        .into_runnable()?;
    let mut state = plan.spawn()?;
    let input = std::fs::File::open(&args.input)
        .with_context(|| format!("cannot read {}", args.input.display()))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, input);
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&args.output)?);
    let max = args.max_payload_mb << 20;
    let mut body: Vec<u8> = Vec::with_capacity(max);
    let mut line = Vec::new();
    let mut rows = 0usize;
    let mut run = |body: &mut Vec<u8>, out: &mut BufWriter<std::fs::File>| -> anyhow::Result<()> {
        if body.is_empty() {
            return Ok(());
        }
        let (features, n) = iris::parse_csv(body).map_err(anyhow::Error::msg)?;
        let tensor = Tensor::from_shape(&[n, iris::FEATURES], &features)?;
        let outputs = state.run(tvec![tensor.into_tvalue()])?;
        // As Plinth does after every backend run.
        plinth_runtime::nn::clear_upper_vector_state();
        let probabilities = outputs[0].try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        let mut text = String::with_capacity(40 * n);
        for row in probabilities.chunks_exact(iris::LABELS.len()) {
            text.push_str(iris::LABELS[iris::argmax(row)]);
            for p in row {
                text.push(',');
                text.push_str(&p.to_string());
            }
            text.push('\n');
        }
        out.write_all(text.as_bytes())?;
        body.clear();
        Ok(())
    };
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let record = line.strip_suffix(b"\n").unwrap_or(&line);
        let record = record.strip_suffix(b"\r").unwrap_or(record);
        if record.is_empty() {
            continue;
        }
        if !body.is_empty() && body.len() + 1 + record.len() > max {
            run(&mut body, &mut out)?;
        }
        if !body.is_empty() {
            body.push(b'\n');
        }
        body.extend_from_slice(record);
        rows += 1;
    }
    run(&mut body, &mut out)?;
    out.flush()?;
    println!("{rows}");
    Ok(())
}
