//! What lasts: the durable store (SQLite), the catalog of definitions (models, endpoint
//! configs, alarms) and Application Auto Scaling's targets and policies kept in memory over
//! it, the asynchronous queue (in memory over its own log) and its group commit, the metric store (CloudWatch's datapoints, in a
//! database of its own), and model artifacts on disk (local ones, and
//! `s3://` ones fetched into the data directory). Nothing here knows
//! about HTTP, operations or running pools; the layers above are handed what they need.

pub(crate) mod artifacts;
pub(crate) mod catalog;
pub(crate) mod group_commit;
pub(crate) mod identity;
pub(crate) mod metric_store;
pub(crate) mod queue;
pub(crate) mod remote;
pub(crate) mod scaling;
pub(crate) mod store;
pub(crate) mod stored;

pub(crate) use identity::{arn, now, scalable_target_arn, scaling_policy_arn, ACCOUNT_ID};
pub(crate) use stored::Stored;
