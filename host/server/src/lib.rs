//! Plinth's server as a library, in layers whose arrows point down only:
//!
//! - [`cli`]: the `plinth` command line (client commands; `serve` hands over to [`serve`]);
//! - [`dev`]: `plinth dev`, a plugin author's loop: one component served, rebuilt and
//!   swapped on change, on top of [`serve`];
//! - [`serve`]: startup: state opened, fleet rebuilt, deployment file applied, listening;
//! - [`http`]: the wire: router, runtime API, control-plane protocol, authentication;
//! - `ops`: the control-plane operations, one module per resource family;
//! - `fleet`: what runs: the live endpoint table, deployments, rollouts, shadows, ledger;
//! - `state`: what lasts: the store, the catalog of definitions, artifacts.
//!
//! Beside them, used from any layer: `apply` (the deployment file as a client of the
//! operations), `error` (the one API error type), `metrics`, `sigv4`.
//! `ARCHITECTURE.md` at the repository root follows a request, a deployment, a rollout step
//! and a state write through these files.

pub mod cli;
pub mod dev;
pub mod http;
pub mod serve;

pub(crate) mod apply;
pub(crate) mod error;
pub(crate) mod fleet;
pub(crate) mod metrics;
pub(crate) mod ops;
pub(crate) mod sigv4;
pub(crate) mod state;
