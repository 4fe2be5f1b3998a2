//! Plinth's HTTP load engine, on its own so that `plinth bench` can use it without the native
//! reference servers (and their ML runtimes) of `plinth-bench`. It owns:
//!
//! - [`load`]: the engine itself, HTTP/1.1 keep-alive requests to one URL in a closed loop
//!   (N connections, one request in flight each) or an open loop (a fixed rate, latency
//!   counted from when each request was due), with a progress callback and per-request
//!   header hooks;
//! - [`summary`]: what one run measured ([`summary::Tally`]: latency histogram, non-2xx
//!   answers, errors, dropped requests, production variants), and the `loadgen` binary's
//!   human line and JSON ([`summary::Summary`]);
//! - [`report`]: what `plinth bench` reports over a sweep of runs: the table, the JSON and the
//!   recommendation against a latency target (pure functions).
//!
//! The `loadgen` binary (`src/bin/loadgen.rs`) is the closed-loop command line of the HTTP
//! benchmark scripts in `host/bench/`.

pub mod load;
pub mod report;
pub mod summary;
