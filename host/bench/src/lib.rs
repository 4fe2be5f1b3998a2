//! What Plinth's native (no Wasm) reference servers share: the iris request and response
//! formats ([`iris`]: CSV parsing and the predictions JSON, matching the iris plugin), and
//! their serving loop ([`native`]). The load generator that measures them is the `loadgen`
//! binary of `plinth-loadgen`.

pub mod iris;
pub mod native;
