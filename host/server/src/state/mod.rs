//! What lasts: the durable store (SQLite), the catalog of definitions (models, endpoint
//! configs, alarms) kept in memory over it, and model artifacts on disk. Nothing here knows
//! about HTTP, operations or running pools; the layers above are handed what they need.

pub(crate) mod artifacts;
pub(crate) mod catalog;
pub(crate) mod store;

use catalog::Catalog;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

/// The definitions Plinth keeps (models, endpoint configs, alarms: the catalog, in memory
/// over the store), the store itself, and where artifacts are unpacked: what the operations
/// on definitions need, and all they need.
pub(crate) struct Stored {
    catalog: Mutex<Catalog>,
    /// The database: definitions, endpoints, events, the ledger.
    pub(crate) store: store::Store,
    /// Where `.tar.gz` model artifacts are unpacked.
    pub(crate) artifacts: PathBuf,
}

impl Stored {
    /// `store`, with `catalog` read from it and artifacts unpacked under `artifacts`.
    pub(crate) fn new(store: store::Store, catalog: Catalog, artifacts: PathBuf) -> Self {
        Self {
            catalog: Mutex::new(catalog),
            store,
            artifacts,
        }
    }

    /// The catalog, locked (a panic while it was held leaves it usable: every change to it
    /// follows a committed store write).
    pub(crate) fn catalog(&self) -> MutexGuard<'_, Catalog> {
        self.catalog.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The account id in messages and ARNs; Plinth has no accounts.
pub(crate) const ACCOUNT_ID: &str = "123456789012";

/// The region named in ARNs.
const REGION: &str = "us-east-1";

/// SageMaker's ARN for a resource (`kind` is `model`, `endpoint-config`, `endpoint` or
/// `alarm`).
pub(crate) fn arn(kind: &str, name: &str) -> String {
    format!(
        "arn:aws:sagemaker:{REGION}:{ACCOUNT_ID}:{kind}/{}",
        name.to_lowercase()
    )
}

/// Now, in epoch seconds to the millisecond (SageMaker's timestamps).
pub(crate) fn now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as f64 / 1000.0)
        .unwrap_or(0.0)
}
