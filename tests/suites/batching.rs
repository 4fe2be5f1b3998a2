//! Batching (`max_batch_size` > 1), against the real `plinth` binary: requests that queue for
//! a busy instance are served together in one `invoke-batch` call, each gets its own answer,
//! a handler error stays with its request, and a batch that traps is served again one
//! request at a time so that only the request at fault fails. (Batch sizes out of range are
//! fixture cases: `tests/cases/CreateEndpointConfig/batch-size-*`.)

use std::sync::Barrier;
use std::time::Duration;

use plinth_tests::metrics::{counter, of_variant};
use plinth_tests::{ApiError, Config, Model, Server, StatusCode, Variant, FAULTS_WASM};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_plinth");

/// Holds the endpoint's one instance with an `ok-0` request, sends `faults` (each body names
/// a fault; `ok-N` is no fault's name, so it answers "ok") all at once while it is busy, so
/// that they queue, and returns each with its response once all are answered.
fn hold_then_queue<'a>(
    server: &Server,
    endpoint: &str,
    faults: &[&'a str],
) -> Vec<(&'a str, plinth_tests::Response)> {
    let barrier = Barrier::new(faults.len());
    std::thread::scope(|s| {
        let holder = s.spawn(|| server.invoke(endpoint, "text/plain", "ok-0", &[]));
        server.wait_busy(endpoint, "V", Duration::from_secs(10));
        let queued: Vec<_> = faults
            .iter()
            .map(|&fault| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    (fault, server.invoke(endpoint, "text/plain", fault, &[]))
                })
            })
            .collect();
        assert_eq!(holder.join().unwrap().status(), StatusCode::OK);
        queued.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn queued_requests_are_batched_and_each_keeps_its_own_outcome() {
    // One slow instance (every predict_fn sleeps 300 ms): while a first request holds it,
    // the others queue, and the runner takes them as one batch.
    let config = Config::new()
        .model(Model::new("faults", FAULTS_WASM).env("FAULT_DELAY_MS", "300"))
        .endpoint_with_variants(
            "slow",
            vec![Variant::new("V", "faults", 1).max_batch_size(16)],
        );
    let server = Server::start(BIN, &config.to_toml());
    let faults = [
        "ok-1",
        "panic",
        "ok-2",
        "model-error",
        "ok-3",
        "bad-request",
        "ok-4",
    ];
    let results = hold_then_queue(&server, "slow", &faults);
    for (fault, response) in results {
        match fault {
            ok if ok.starts_with("ok-") => {
                assert_eq!(response.status(), StatusCode::OK, "{ok}");
                assert_eq!(response.text().unwrap(), "ok", "{ok}");
            }
            "panic" => {
                let e = ApiError::from_response(response);
                assert_eq!(e.status, StatusCode::FAILED_DEPENDENCY, "{}", e.body);
                assert!(
                    e.body.to_string().contains("deliberate panic"),
                    "{}",
                    e.body
                );
            }
            "model-error" => {
                let e = ApiError::from_response(response);
                assert_eq!(e.original_status(), Some(500), "{}", e.body);
                assert!(
                    e.body.to_string().contains("deliberate model error"),
                    "{}",
                    e.body
                );
            }
            "bad-request" => {
                let e = ApiError::from_response(response);
                assert_eq!(e.original_status(), Some(400), "{}", e.body);
            }
            other => unreachable!("{other}"),
        }
    }
    let m = server.metrics();
    // The queued requests went in batches (at least one of several requests); the batch with
    // the panic trapped, was replayed one by one, and the panic trapped again on its own:
    // two replacements.
    assert!(
        counter(&m, "plinth_variant_batches", &of_variant("slow", "V")) >= 1.0,
        "{m}"
    );
    assert!(
        counter(
            &m,
            "plinth_variant_batched_requests",
            &of_variant("slow", "V")
        ) >= 2.0,
        "{m}"
    );
    assert_eq!(
        counter(
            &m,
            "plinth_variant_instances_replaced",
            &of_variant("slow", "V")
        ),
        2.0,
        "{m}"
    );
    // And the endpoint still serves.
    let after = server.invoke("slow", "text/plain", "ok", &[]);
    assert_eq!(after.status(), StatusCode::OK);
}

#[test]
fn a_request_that_loops_in_a_batch_times_out_alone() {
    // A 1 s deadline; the loop holds the batch until it, then the batch is replayed one by
    // one: the ok requests answer (after the loop times out a second time, alone), and the
    // loop fails as a timeout.
    let config = Config::new()
        .model(
            Model::new("faults", FAULTS_WASM)
                .env("FAULT_DELAY_MS", "200")
                .timeout_seconds(1),
        )
        .endpoint_with_variants(
            "slow",
            vec![Variant::new("V", "faults", 1).max_batch_size(8)],
        );
    let server = Server::start(BIN, &config.to_toml());
    let faults = ["ok-1", "loop", "ok-2"];
    let results = hold_then_queue(&server, "slow", &faults);
    for (fault, response) in results {
        if fault == "loop" {
            let e = ApiError::from_response(response);
            assert_eq!(e.status, StatusCode::FAILED_DEPENDENCY, "{}", e.body);
            assert!(e.message.contains("timed out"), "{}", e.body);
        } else {
            assert_eq!(response.status(), StatusCode::OK, "{fault}");
            assert_eq!(response.text().unwrap(), "ok", "{fault}");
        }
    }
    let m = server.metrics();
    assert!(
        counter(&m, "plinth_variant_batches", &of_variant("slow", "V")) >= 1.0,
        "{m}"
    );
    assert_eq!(
        counter(
            &m,
            "plinth_variant_instances_replaced",
            &of_variant("slow", "V")
        ),
        2.0,
        "{m}"
    );
}

/// The probabilities the iris endpoint answers for one CSV row.
fn probabilities(response: plinth_tests::Response) -> Vec<f64> {
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().unwrap();
    body["predictions"][0]["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap())
        .collect()
}

#[test]
fn a_batched_model_answers_each_request_as_alone() {
    // The iris plugin runs a batch as one stacked matrix and splits the answer back; under
    // concurrent load on one instance, every answer must match the unbatched endpoint's.
    let config = Config::new()
        .model(Model::iris("iris"))
        .endpoint_with_variants("alone", vec![Variant::new("V", "iris", 1)])
        .endpoint_with_variants(
            "batched",
            vec![Variant::new("V", "iris", 1).max_batch_size(32)],
        );
    let server = Server::start(BIN, &config.to_toml());
    let rows: Vec<String> = (0..24)
        .map(|i| {
            let f = f64::from(i);
            format!(
                "{:.1},{:.1},{:.1},{:.1}",
                4.3 + f * 0.15,
                2.0 + (f * 0.7) % 2.4,
                1.0 + f * 0.25,
                0.1 + (f * 0.3) % 2.4
            )
        })
        .collect();
    let expected: Vec<Vec<f64>> = rows
        .iter()
        .map(|row| probabilities(server.invoke("alone", "text/csv", row.clone(), &[])))
        .collect();
    let rounds = 20;
    std::thread::scope(|s| {
        for (row, want) in rows.iter().zip(&expected) {
            let server = &server;
            s.spawn(move || {
                for _ in 0..rounds {
                    let got = probabilities(server.invoke("batched", "text/csv", row.clone(), &[]));
                    assert_eq!(got.len(), want.len(), "{row}");
                    for (g, w) in got.iter().zip(want) {
                        assert!(
                            (g - w).abs() < 1e-5,
                            "{row}: batched {got:?}, alone {want:?}"
                        );
                    }
                }
            });
        }
    });
    let m = server.metrics();
    let batched = counter(
        &m,
        "plinth_variant_batched_requests",
        &of_variant("batched", "V"),
    );
    assert!(
        batched > 0.0,
        "24 clients on one instance never formed a batch:\n{m}"
    );
    assert_eq!(
        counter(&m, "plinth_invocations_total", &of_variant("batched", "V")),
        (rows.len() * rounds) as f64,
        "{m}"
    );
}
