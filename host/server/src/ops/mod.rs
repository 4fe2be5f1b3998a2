//! The operations: one module per resource family (models, endpoint configs, endpoints,
//! alarms (Plinth's and CloudWatch's), experiments, shadow variants, loaded models, asynchronous queues, transform jobs,
//! model quality job definitions and monitoring schedules, Application Auto Scaling's
//! targets and policies), each taking an operation's JSON input and giving its JSON
//! output or an [`ApiError`], plus what they share (errors, names, listing).
//! Definitions are kept by `state`; endpoints are changed through `fleet`.
//!
//! [`call`] is the one entry point for SageMaker's (and Plinth's) operations: the HTTP
//! control plane, the deployment file and the CLI all go through it;
//! [`autoscaling::call`] is Application Auto Scaling's, [`cloudwatch::call`] CloudWatch's.

pub(crate) mod alarms;
pub(crate) mod async_queue;
pub(crate) mod autoscaling;
pub(crate) mod cloudwatch;
pub(crate) mod common;
pub(crate) mod dispatch;
pub(crate) mod endpoint_configs;
pub(crate) mod endpoints;
pub(crate) mod experiments;
pub(crate) mod listing;
pub(crate) mod loaded_models;
pub(crate) mod metric_alarms;
pub(crate) mod models;
pub(crate) mod monitoring;
pub(crate) mod shadow_variants;
pub(crate) mod transform_jobs;

pub(crate) use dispatch::call;
