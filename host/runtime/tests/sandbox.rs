//! The sandbox's limits, in process, against the `hostile` test plugin: each attack fails
//! only its own call, with the error naming the limit it met, and the next request to the
//! same variant is served at once (a stuck instance is abandoned and replaced).

use plinth_runtime::{
    Invocation, InvokeError, Limits, LoadError, Runtime, RuntimeConfig, VariantPool, VariantSpec,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn spec(limits: Limits, environment: Vec<(String, String)>) -> VariantSpec {
    VariantSpec {
        endpoint: "sandbox".into(),
        variant: "AllTraffic".into(),
        component: plinth_tests::HOSTILE_WASM.into(),
        model_dir: Some(PathBuf::from(plinth_tests::IRIS_MODEL_DIR)),
        environment,
        instance_count: 1,
        routing: Default::default(),
        limits,
        backend: Default::default(),
        elastic: None,
    }
}

fn attack(name: &str) -> Invocation {
    Invocation {
        body: b"x".to_vec().into(),
        content_type: "text/plain".into(),
        accept: String::new(),
        inference_id: name.into(),
        deadline: None,
        custom_attributes: (!name.is_empty()).then(|| name.to_string()),
    }
}

fn short_deadline() -> Limits {
    Limits {
        deadline: Duration::from_millis(500),
        ..Limits::default()
    }
}

/// Run `attack` on a fresh pool; return its error, after checking that the next ordinary
/// request is served, and quickly.
async fn attacked(runtime: &Runtime, limits: Limits, name: &str) -> InvokeError {
    let pool = Arc::new(
        VariantPool::new(runtime, &spec(limits, Vec::new()))
            .await
            .unwrap(),
    );
    let started = Instant::now();
    let error = match pool.invoke(attack(name)).await {
        Ok(out) => panic!("{name}: the attack succeeded: {} bytes", out.body.len()),
        Err(e) => e,
    };
    let took = started.elapsed();
    let started = Instant::now();
    let next = pool.invoke(attack("")).await;
    assert_eq!(
        next.map(|o| o.body).map_err(|e| e.to_string()),
        Ok(b"ok".to_vec()),
        "{name}: the next request failed"
    );
    // The replaced instance must be warm by then: the next request does not wait for a stuck
    // one (a 30 s sleep, an endless compute).
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{name}: the next request took {:?} (the attack took {took:?})",
        started.elapsed()
    );
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_attack_fails_only_itself_naming_its_limit() {
    let runtime = Runtime::new(&RuntimeConfig::default()).unwrap();

    // A host wait past the deadline: the watchdog abandons the instance.
    let started = Instant::now();
    let e = attacked(&runtime, short_deadline(), "sleep").await;
    assert!(matches!(e, InvokeError::Timeout(_)), "sleep: {e}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "sleep took {:?}",
        started.elapsed()
    );

    // Backend work past the deadline: the call traps as a timeout at the deadline.
    let e = attacked(&runtime, short_deadline(), "compute").await;
    assert!(matches!(e, InvokeError::Timeout(_)), "compute: {e}");

    let e = attacked(&runtime, Limits::default(), "big-response").await;
    assert!(
        e.to_string().contains("MaxResponseSizeInMB"),
        "big-response: {e}"
    );

    let limits = Limits {
        memory_bytes: 64 << 20,
        ..Limits::default()
    };
    let e = attacked(&runtime, limits, "tensors").await;
    assert!(e.to_string().contains("MemorySizeInMB"), "tensors: {e}");

    let e = attacked(&runtime, Limits::default(), "graph-bytes").await;
    assert!(
        e.to_string().contains("AllowGraphsFromBytes"),
        "graph-bytes: {e}"
    );

    let e = attacked(&runtime, Limits::default(), "files").await;
    assert!(e.to_string().contains("open files"), "files: {e}");
}

/// A model that opts in may load a graph from its bytes; the graph is charged to its memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphs_from_bytes_load_when_allowed() {
    let runtime = Runtime::new(&RuntimeConfig::default()).unwrap();
    let limits = Limits {
        graphs_from_bytes: true,
        ..Limits::default()
    };
    let pool = VariantPool::new(&runtime, &spec(limits, Vec::new()))
        .await
        .unwrap();
    let text = match pool.invoke(attack("graph-bytes")).await {
        Ok(out) => String::from_utf8_lossy(&out.body).to_string(),
        Err(e) => e.to_string(),
    };
    assert!(text.contains("graph loaded from"), "{text}");
}

/// 100 MiB of stdout costs the host linear time and is rate limited: the request succeeds,
/// and the dropped lines are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_floods_are_rate_limited() {
    let runtime = Runtime::new(&RuntimeConfig::default()).unwrap();
    let pool = VariantPool::new(&runtime, &spec(Limits::default(), Vec::new()))
        .await
        .unwrap();
    let started = Instant::now();
    let out = pool.invoke(attack("stdout")).await.unwrap();
    assert_eq!(out.body, b"ok");
    let stats = pool.stats();
    // 100 MiB in 100-byte lines is about a million lines; at most LOG_LINES_PER_SECOND a
    // second are logged.
    let seconds = started.elapsed().as_secs() + 1;
    assert!(
        stats.log_lines_dropped
            >= 1_000_000 - seconds * Limits::LOG_LINES_PER_SECOND as u64 - 100_000,
        "only {} lines dropped in {:?}",
        stats.log_lines_dropped,
        started.elapsed()
    );
}

/// `model_fn` runs under the startup deadline, whether it spins or waits in the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_fn_past_the_startup_deadline_fails_naming_it() {
    let runtime = Runtime::new(&RuntimeConfig::default()).unwrap();
    for how in ["loop", "hang"] {
        let limits = Limits {
            startup_deadline: Duration::from_millis(500),
            ..Limits::default()
        };
        let environment = vec![("HOSTILE_MODEL_FN".to_string(), how.to_string())];
        let started = Instant::now();
        let error = VariantPool::new(&runtime, &spec(limits, environment))
            .await
            .err()
            .unwrap_or_else(|| panic!("{how}: model_fn succeeded"));
        assert!(matches!(error, LoadError::ModelFn(_)), "{how}: {error}");
        assert!(
            error
                .to_string()
                .contains("ContainerStartupHealthCheckTimeoutInSeconds"),
            "{how}: {error}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{how}: {:?}",
            started.elapsed()
        );
    }
}

/// A long backend computation runs off the async workers: on a runtime with one worker, a
/// timer keeps firing while it runs (inline, the worker would be held for all of it).
#[test]
fn a_long_computation_leaves_the_worker_free() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async {
        let runtime = Runtime::new(&RuntimeConfig::default()).unwrap();
        let limits = Limits {
            memory_bytes: 1 << 30,
            ..Limits::default()
        };
        let pool = Arc::new(
            VariantPool::new(&runtime, &spec(limits, Vec::new()))
                .await
                .unwrap(),
        );
        // A short computation first: the graph's history then says "fast" for small inputs,
        // which must not make a large one run inline.
        let warm = pool.invoke(attack("")).await.unwrap();
        assert_eq!(warm.body, b"ok");
        let started = Instant::now();
        let long = tokio::spawn({
            let pool = pool.clone();
            async move { pool.invoke(attack("long-compute")).await }
        });
        let mut worst = Duration::ZERO;
        while !long.is_finished() {
            let asked = Instant::now();
            tokio::time::sleep(Duration::from_millis(5)).await;
            worst = worst.max(asked.elapsed());
        }
        let took = started.elapsed();
        let out = long.await.unwrap().unwrap();
        assert_eq!(out.body, b"ok");
        assert!(
            took > Duration::from_millis(300),
            "the long computation took only {took:?}: too short to tell"
        );
        // Inline, the worker would be held for the whole computation and the timer would
        // fire about `took` late; off the worker it fires on time, give or take the
        // scheduling delays of a loaded machine (which reach a hundred milliseconds on two
        // busy cores: the bound is a quarter of the computation, not a fixed time).
        assert!(
            worst < took / 4,
            "a 5 ms timer fired {worst:?} late while a {took:?} computation ran"
        );
    });
}

/// A call's own deadline (an inference pipeline's stage gets what is left of its chain's)
/// stops it before the variant's, by the epoch and by the watchdog alike; a longer one is
/// capped at the variant's. The instance serves the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calls_own_deadline_stops_it_before_the_variants() {
    let runtime = Runtime::new(&RuntimeConfig::default()).unwrap();
    let limits = Limits {
        deadline: Duration::from_secs(20),
        ..Limits::default()
    };
    let pool = Arc::new(
        VariantPool::new(&runtime, &spec(limits, Vec::new()))
            .await
            .unwrap(),
    );
    for attack_name in ["compute", "sleep"] {
        let started = Instant::now();
        let e = pool
            .invoke(Invocation {
                deadline: Some(Duration::from_millis(300)),
                ..attack(attack_name)
            })
            .await
            .unwrap_err();
        assert!(matches!(e, InvokeError::Timeout(_)), "{attack_name}: {e}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{attack_name} ran {:?} with a 300 ms deadline",
            started.elapsed()
        );
        let next = pool.invoke(attack("")).await.map(|o| o.body);
        assert_eq!(next.map_err(|e| e.to_string()), Ok(b"ok".to_vec()));
    }
    let request = Invocation {
        deadline: Some(Duration::from_secs(3600)),
        ..attack("")
    };
    assert_eq!(
        request.deadline_within(Duration::from_secs(20)),
        Duration::from_secs(20)
    );
}

/// A call served in the caller's task (`invoke_here`, as a pipeline's stages are) that is
/// dropped midway leaves no stuck slot: the instance in an unknown state is dropped and the
/// next request, queued or direct, is served by a fresh one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_direct_call_frees_its_instance() {
    let runtime = Runtime::new(&RuntimeConfig::default()).unwrap();
    let pool = Arc::new(
        VariantPool::new(&runtime, &spec(Limits::default(), Vec::new()))
            .await
            .unwrap(),
    );
    let sleeping = attack("sleep");
    let dropped =
        tokio::time::timeout(Duration::from_millis(200), pool.invoke_here(&sleeping)).await;
    assert!(dropped.is_err(), "the sleep returned: {dropped:?}");
    let started = Instant::now();
    let next = pool.invoke(attack("")).await.map(|o| o.body);
    assert_eq!(next.map_err(|e| e.to_string()), Ok(b"ok".to_vec()));
    // The runner hands its instance back just after the answer: `invoke_here` serves only
    // on an idle one (else `Unavailable`, by design), so wait until it is idle.
    while pool.stats().busy > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never idle again"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let here = pool.invoke_here(&attack("")).await.map(|o| o.body);
    assert_eq!(here.map_err(|e| e.to_string()), Ok(b"ok".to_vec()));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(pool.stats().replaced, 1);
}
