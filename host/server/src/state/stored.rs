//! [`Stored`]: the handle to what lasts: the catalog of definitions kept in memory over the
//! store, the store itself, where artifacts are unpacked, and the remote (`s3://`) ones.

use super::catalog::Catalog;
use super::store::Store;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

/// The definitions Plinth keeps (models, endpoint configs, alarms: the catalog, in memory
/// over the store), the store itself, and where artifacts are unpacked: what the operations
/// on definitions need, and all they need.
pub(crate) struct Stored {
    catalog: Mutex<Catalog>,
    /// The database: definitions, endpoints, events, the ledger.
    pub(crate) store: Store,
    /// Where `.tar.gz` model artifacts are unpacked.
    pub(crate) artifacts: PathBuf,
    /// Where models' files may come from.
    pub(crate) roots: super::artifacts::Roots,
    /// Models' `s3://` artifacts and components, fetched and kept under `artifacts/s3`.
    pub(crate) remote: super::remote::RemoteArtifacts,
}

impl Stored {
    /// `store`, with `catalog` read from it and artifacts unpacked under `artifacts`.
    pub(crate) fn new(
        store: Store,
        catalog: Catalog,
        artifacts: PathBuf,
        roots: super::artifacts::Roots,
        storage: std::sync::Arc<plinth_storage::Storage>,
    ) -> Self {
        Self {
            catalog: Mutex::new(catalog),
            store,
            remote: super::remote::RemoteArtifacts::new(storage, &artifacts),
            artifacts,
            roots,
        }
    }

    /// The catalog, locked (a panic while it was held leaves it usable: every change to it
    /// follows a committed store write).
    pub(crate) fn catalog(&self) -> MutexGuard<'_, Catalog> {
        self.catalog.lock().unwrap_or_else(|e| e.into_inner())
    }
}
