//! Plinth's pure logic, with no Wasm engine and no async runtime: the declarative
//! deployment file (parsed strictly, then validated into [`config::Deployment`]) and
//! variant selection ([`routing`]), with traffic shares learned from outcomes by a
//! multi-armed bandit ([`bandit`]) and sticky per-key assignment by consistent hashing
//! ([`sticky`]), and A/B experiment statistics ([`experiment`]: running per-variant
//! outcomes, fixed-horizon and always-valid sequential tests of a treatment against the
//! control). Everything here is plain functions over plain data.

pub mod alarm;
pub mod bandit;
pub mod capacity;
pub mod config;
pub mod experiment;
pub mod members;
pub mod names;
pub mod rollout;
pub mod routing;
pub mod shadow;
pub mod sticky;
