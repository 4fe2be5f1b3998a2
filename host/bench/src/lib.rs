//! Tools for Plinth's HTTP benchmark: the pure parts shared by the `native-iris` reference
//! server and the `loadgen` load generator (CSV parsing and the iris response format, and
//! the load generator's summary), kept here so they can be unit-tested without a server.

pub mod iris;
pub mod summary;
