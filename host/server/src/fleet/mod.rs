//! What runs: the live endpoint table (immutable snapshots published with arc-swap) and
//! everything that changes it or rides on it: deploying and removing endpoints, the
//! blue/green and rolling deployment driver, inference pipelines' stages, alarms watched
//! during a deployment, shadow copies, data capture, model quality monitoring, the
//! experiments' ledger, the Application Auto Scaling controller, the metrics published to
//! the metric store, and the asynchronous queue and batch transform runners. This layer is handed the store and the catalog; it
//! knows nothing of HTTP or of the operations' wire shapes.

pub(crate) mod alarm_watch;
pub(crate) mod assemble;
pub(crate) mod async_jobs;
pub(crate) mod autoscaler;
pub(crate) mod background;
pub(crate) mod capture;
pub(crate) mod deploy;
pub(crate) mod deployer;
pub(crate) mod ledger;
pub(crate) mod metric_publisher;
pub(crate) mod monitoring;
pub(crate) mod multi_model;
pub(crate) mod pipeline;
pub(crate) mod recent;
pub(crate) mod rollout_driver;
pub(crate) mod shadow_copies;
pub(crate) mod table;
pub(crate) mod tasks;
#[cfg(test)]
pub(crate) mod test_hooks;
pub(crate) mod transform_jobs;
pub(crate) mod variant;

pub(crate) use deployer::Fleet;
