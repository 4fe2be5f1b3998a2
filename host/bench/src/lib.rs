//! Tools for Plinth's HTTP benchmark and load testing: the pure parts shared by the
//! `native-iris` reference server and the `loadgen` load generator (CSV parsing and the iris
//! response format, and the load generator's summary), the load engine itself ([`load`]:
//! closed and open loop, used by `loadgen` and by `plinth bench`), and what `plinth bench`
//! reports ([`report`]: runs, the recommendation against a latency target, table and JSON),
//! and the serving loop of the native reference servers ([`native`]).

pub mod iris;
pub mod load;
pub mod native;
pub mod report;
pub mod summary;
