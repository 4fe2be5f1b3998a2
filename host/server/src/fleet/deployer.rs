//! The deployer handle, [`Fleet`]: what building, publishing and changing endpoints needs
//! (the runtime, the stored definitions, the endpoint table, the ledger, metrics, the
//! instance limit, the lock that serialises changes, and the background tasks changing
//! endpoints).

use crate::metrics::Metrics;
use crate::state::Stored;
use std::sync::Arc;

/// The deployer: what building, publishing and changing endpoints needs, and nothing of the
/// wire. The operations and the HTTP layer hold it behind an `Arc`.
pub(crate) struct Fleet {
    pub(crate) runtime: Arc<plinth_runtime::Runtime>,
    /// Definitions, the store and artifacts.
    pub(crate) stored: Arc<Stored>,
    pub(crate) endpoints: super::table::EndpointTable,
    /// Instances all endpoints together may ask for (`ResourceLimitExceeded` beyond).
    pub(crate) max_instances: usize,
    /// Experiments and the inference ledger.
    pub(crate) experiments: super::ledger::Experiments,
    pub(crate) metrics: Metrics,
    /// Changes to endpoints happen one at a time: the operations that change one hold it,
    /// and so does each commit of a background task (`background.rs` `Job::commit`).
    pub(crate) changes: tokio::sync::Mutex<()>,
    /// The background task changing each endpoint, if any (DeleteEndpoint cancels it).
    pub(crate) tasks: Arc<super::tasks::Tasks>,
    /// Asynchronous inference's queue runner.
    pub(crate) async_jobs: super::async_jobs::AsyncJobs,
    /// Batch transform's running jobs.
    pub(crate) transform_jobs: super::transform_jobs::TransformJobs,
    /// Data capture's queue, written by `Captures::run`.
    pub(crate) captures: super::capture::Captures,
    /// The monitoring schedules whose execution is running (`monitoring::run`).
    pub(crate) monitoring: super::monitoring::Running,
    /// CloudWatch alarms' states.
    pub(crate) alarm_states: super::alarm_watch::AlarmStates,
}

impl Fleet {
    /// A fleet over `stored`, with no endpoint running yet (`deploy::recover` brings back
    /// the stored ones).
    pub(crate) fn new(
        runtime: Arc<plinth_runtime::Runtime>,
        stored: Arc<Stored>,
        experiments: super::ledger::Experiments,
        max_instances: usize,
    ) -> Self {
        let metrics = Metrics::new();
        Self {
            alarm_states: super::alarm_watch::AlarmStates::load(&stored.store),
            captures: super::capture::Captures::new(&metrics, super::capture::BUFFER_BYTES),
            monitoring: Default::default(),
            runtime,
            stored,
            endpoints: Default::default(),
            max_instances,
            experiments,
            metrics,
            changes: tokio::sync::Mutex::new(()),
            tasks: Default::default(),
            async_jobs: Default::default(),
            transform_jobs: Default::default(),
        }
    }

    /// The catalog, locked.
    pub(crate) fn catalog(&self) -> std::sync::MutexGuard<'_, crate::state::catalog::Catalog> {
        self.stored.catalog()
    }
}
