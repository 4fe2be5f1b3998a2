//! [`Stored`]: the handle to what lasts: the catalog of definitions and the scalable targets
//! kept in memory over the store, the store itself, the metric store, the asynchronous queue, where artifacts are
//! unpacked, and the remote (`s3://`) ones.

use super::catalog::Catalog;
use super::scaling::Scaling;
use super::store::Store;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

/// The definitions Plinth keeps (models, endpoint configs, alarms: the catalog, in memory
/// over the store), the store itself, and where artifacts are unpacked: what the operations
/// on definitions need, and all they need.
pub(crate) struct Stored {
    catalog: Mutex<Catalog>,
    /// Application Auto Scaling's scalable targets and policies.
    scaling: Mutex<Scaling>,
    /// The database: definitions, endpoints, events, the ledger.
    pub(crate) store: Store,
    /// Where `.tar.gz` model artifacts are unpacked.
    pub(crate) artifacts: PathBuf,
    /// Where models' files may come from.
    pub(crate) roots: super::artifacts::Roots,
    /// Models' `s3://` artifacts and components, fetched and kept under `artifacts/s3`.
    pub(crate) remote: super::remote::RemoteArtifacts,
    /// CloudWatch's datapoints; `None` when no metrics are stored.
    pub(crate) metrics: Option<std::sync::Arc<super::metric_store::MetricStore>>,
    /// The asynchronous queue (in memory only unless given one with a log).
    pub(crate) queue: std::sync::Arc<super::queue::Queue>,
}

impl Stored {
    /// `store`, with `catalog` read from it and artifacts unpacked under `artifacts`.
    pub(crate) fn new(
        store: Store,
        catalog: Catalog,
        scaling: Scaling,
        artifacts: PathBuf,
        roots: super::artifacts::Roots,
        storage: std::sync::Arc<plinth_storage::Storage>,
    ) -> Self {
        Self {
            catalog: Mutex::new(catalog),
            scaling: Mutex::new(scaling),
            store,
            remote: super::remote::RemoteArtifacts::new(storage, &artifacts),
            artifacts,
            roots,
            metrics: None,
            queue: std::sync::Arc::new(super::queue::Queue::in_memory()),
        }
    }

    /// The same, with `queue` as its asynchronous queue.
    pub(crate) fn with_queue(mut self, queue: super::queue::Queue) -> Self {
        self.queue = std::sync::Arc::new(queue);
        self
    }

    /// The same, with `metrics` as its metric store.
    pub(crate) fn with_metrics(
        mut self,
        metrics: Option<std::sync::Arc<super::metric_store::MetricStore>>,
    ) -> Self {
        self.metrics = metrics;
        self
    }

    /// The catalog, locked (a panic while it was held leaves it usable: every change to it
    /// follows a committed store write).
    pub(crate) fn catalog(&self) -> MutexGuard<'_, Catalog> {
        self.catalog.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The scalable targets and policies, locked (as [`Stored::catalog`]: each change
    /// follows a committed store write).
    pub(crate) fn scaling(&self) -> MutexGuard<'_, Scaling> {
        self.scaling.lock().unwrap_or_else(|e| e.into_inner())
    }
}
