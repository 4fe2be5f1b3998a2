//! Plinth's pure logic, with no Wasm engine and no async runtime: the declarative
//! deployment file (parsed strictly, then validated into [`config::Deployment`]) and
//! variant selection ([`routing`]). Everything here is plain functions over plain data.

pub mod capacity;
pub mod config;
pub mod names;
pub mod routing;
