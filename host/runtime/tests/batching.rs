//! How a variant's runner forms batches, in process, through the real iris guest on one
//! async worker (the server's shape under load on one core): requests that arrive together
//! are served in one `invoke-batch` call, round after round, even when the runner that a
//! request starts is scheduled ahead of the requests that arrive with it (tokio runs a task
//! spawned on a worker next, before those already waiting).

use plinth_runtime::{Invocation, Limits, Runtime, RuntimeConfig, VariantPool, VariantSpec};
use std::path::PathBuf;
use std::sync::Arc;

const ROUNDS: usize = 20;
const CONCURRENT: usize = 8;

fn pool(tokio: &tokio::runtime::Runtime) -> Arc<VariantPool> {
    let runtime = Runtime::new(&RuntimeConfig::default()).unwrap();
    let spec = VariantSpec {
        endpoint: "batching".into(),
        variant: "AllTraffic".into(),
        component: plinth_tests::IRIS_WASM.into(),
        model_dir: Some(PathBuf::from(plinth_tests::IRIS_MODEL_DIR)),
        environment: Vec::new(),
        instance_count: 1,
        routing: Default::default(),
        limits: Limits {
            max_batch: 16,
            ..Limits::default()
        },
        backend: Default::default(),
        elastic: None,
    };
    Arc::new(tokio.block_on(VariantPool::new(&runtime, &spec)).unwrap())
}

fn request() -> Arc<Invocation> {
    Arc::new(Invocation {
        body: b"5.1,3.5,1.4,0.2".to_vec().into(),
        content_type: "text/csv".into(),
        accept: "application/json".into(),
        inference_id: "batching".into(),
        deadline: None,
        custom_attributes: None,
    })
}

fn one_worker() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// ROUNDS rounds of CONCURRENT requests, each round's requests spawned together from a task
/// on the worker and awaited before the next round.
fn rounds(tokio: &tokio::runtime::Runtime, pool: Arc<VariantPool>) {
    let driver = tokio.spawn(async move {
        for _ in 0..ROUNDS {
            let tasks: Vec<_> = (0..CONCURRENT)
                .map(|_| {
                    let pool = pool.clone();
                    tokio::spawn(async move { pool.invoke(request()).await })
                })
                .collect();
            for task in tasks {
                let output = task.await.unwrap().unwrap();
                assert!(output.body.starts_with(b"{\"predictions\":["));
            }
        }
    });
    tokio.block_on(driver).unwrap();
}

#[test]
fn requests_that_arrive_together_are_served_in_one_call_each_round() {
    let tokio = one_worker();
    let pool = pool(&tokio);
    rounds(&tokio, pool.clone());
    let stats = pool.stats();
    // The first round's runner has no history and may serve the request that started it
    // alone; from then on, no request is served alone.
    assert!(
        stats.batched_requests >= ROUNDS * CONCURRENT - 1,
        "{} of {} requests were batched: {stats:?}",
        stats.batched_requests,
        ROUNDS * CONCURRENT
    );
}
