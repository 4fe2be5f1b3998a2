//! What runs: the live endpoint table (immutable snapshots published with arc-swap) and
//! everything that changes it or rides on it: deploying and removing endpoints, the
//! blue/green and rolling deployment driver, alarms watched during a deployment, shadow
//! copies, and the experiments' ledger. This layer is handed the store and the catalog; it
//! knows nothing of HTTP or of the operations' wire shapes.

pub(crate) mod alarm_watch;
pub(crate) mod assemble;
pub(crate) mod deploy;
pub(crate) mod ledger;
pub(crate) mod recent;
pub(crate) mod rollout_driver;
pub(crate) mod shadow_copies;
pub(crate) mod table;
pub(crate) mod variant;

use crate::metrics::Metrics;
use crate::state::Stored;
use std::sync::Arc;

/// The deployer: what building, publishing and changing endpoints needs, and nothing of the
/// wire. The operations and the HTTP layer hold it behind an `Arc`.
pub(crate) struct Fleet {
    pub(crate) runtime: Arc<plinth_runtime::Runtime>,
    /// Definitions, the store and artifacts.
    pub(crate) stored: Arc<Stored>,
    pub(crate) endpoints: table::EndpointTable,
    /// Instances all endpoints together may ask for (`ResourceLimitExceeded` beyond).
    pub(crate) max_instances: usize,
    /// Experiments and the inference ledger.
    pub(crate) experiments: ledger::Experiments,
    pub(crate) metrics: Metrics,
    /// Changes to endpoints happen one at a time.
    pub(crate) changes: tokio::sync::Mutex<()>,
}

impl Fleet {
    /// A fleet over `stored`, with no endpoint running yet (`deploy::recover` brings back
    /// the stored ones).
    pub(crate) fn new(
        runtime: Arc<plinth_runtime::Runtime>,
        stored: Arc<Stored>,
        experiments: ledger::Experiments,
        max_instances: usize,
    ) -> Self {
        Self {
            runtime,
            stored,
            endpoints: Default::default(),
            max_instances,
            experiments,
            metrics: Metrics::new(),
            changes: tokio::sync::Mutex::new(()),
        }
    }

    /// The catalog, locked.
    pub(crate) fn catalog(&self) -> std::sync::MutexGuard<'_, crate::state::catalog::Catalog> {
        self.stored.catalog()
    }
}
