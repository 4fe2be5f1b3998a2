//! A fixed amount of iris work, for counting instructions under valgrind (cachegrind):
//! `host/bench/instructions.sh` runs it twice with different repeat counts and divides the
//! difference by the extra requests, which cancels the start-up (compiling, loading). On a
//! shared, noisy machine an instruction count does not move from run to run the way a time
//! does, so small changes to the request path can be compared.
//!
//! `instructions MODE REPEATS [BATCH]`:
//! - `native`: BATCH requests' tract runs of the iris graph, one row each, on a reused state
//!   (what the native reference server does per request, without HTTP);
//! - `guest`: BATCH concurrent requests, each its own task, queued on one instance of a
//!   variant with `max_batch = 16`, so that one `invoke-batch` call serves them (CSV in,
//!   JSON out), as the server's batched path does.
//!
//! Each mode repeats REPEATS times; BATCH defaults to 16. `IRIS_WASM` names another iris
//! component (e.g. one built from an older SDK) to count instead of the repository's.

use plinth_runtime::nn::TractGraph;
use plinth_runtime::{
    Backend, Invocation, Limits, Runtime, RuntimeConfig, VariantPool, VariantSpec,
};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use tract_onnx::prelude::{tvec, IntoTValue, Tensor};

/// The server's allocator, so that the counts are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: instructions native|guest REPEATS [BATCH]";
    let mode = args.get(1).expect(usage).as_str();
    let repeats: usize = args.get(2).and_then(|a| a.parse().ok()).expect(usage);
    let batch: usize = args.get(3).map_or(16, |a| a.parse().expect(usage));
    let wasm = std::env::var("IRIS_WASM").unwrap_or_else(|_| plinth_tests::IRIS_WASM.into());
    let model_dir = Path::new(plinth_tests::IRIS_MODEL_DIR);
    // A small pool: valgrind cannot reserve the address space of the default one.
    let runtime = Runtime::new(&RuntimeConfig {
        max_instances: 4,
        max_memory_bytes: 64 << 20,
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    match mode {
        "native" => {
            let onnx = std::fs::read(model_dir.join("model.onnx")).expect("iris model");
            let graph = TractGraph::from_onnx(&onnx).expect("iris graph");
            let mut state = graph.state().expect("tract state");
            for _ in 0..repeats * batch {
                let input = Tensor::from_shape(&[1, 4], &[5.1f32, 3.5, 1.4, 0.2]).unwrap();
                black_box(state.run(tvec![input.into_tvalue()]).expect("tract run"));
                plinth_runtime::nn::clear_upper_vector_state();
            }
        }
        "guest" => {
            let pool = Arc::new(
                tokio
                    .block_on(VariantPool::new(
                        &runtime,
                        &VariantSpec {
                            endpoint: "instructions".into(),
                            variant: "AllTraffic".into(),
                            component: wasm.into(),
                            model_dir: Some(model_dir.to_path_buf()),
                            environment: Vec::new(),
                            instance_count: 1,
                            routing: Default::default(),
                            limits: Limits {
                                max_batch: 16,
                                memory_bytes: 32 << 20,
                                ..Limits::default()
                            },
                            backend: Backend::Tract,
                            elastic: None,
                        },
                    ))
                    .expect("iris variant"),
            );
            let request = Arc::new(Invocation {
                body: b"5.1,3.5,1.4,0.2".to_vec().into(),
                content_type: "text/csv".into(),
                accept: "application/json".into(),
                inference_id: "instructions".into(),
                deadline: None,
                custom_attributes: None,
            });
            for _ in 0..repeats {
                tokio.block_on(async {
                    let tasks: Vec<_> = (0..batch)
                        .map(|_| {
                            let (pool, request) = (pool.clone(), request.clone());
                            tokio::spawn(async move { pool.invoke(request).await })
                        })
                        .collect();
                    for task in tasks {
                        black_box(task.await.expect("task").expect("iris answer"));
                    }
                });
            }
            let stats = pool.stats();
            if batch > 1 && stats.batched_requests != repeats * batch {
                eprintln!("warning: not every request was batched: {stats:?}");
            }
        }
        _ => panic!("{usage}"),
    }
}
