//! Plinth's decisions, as plain functions over plain data: no Wasm engine, no async
//! runtime, no clock, no storage, no I/O. Each is unit-tested alone.
//!
//! - Validation: the declarative deployment file ([`config`], parsed strictly, then
//!   validated into [`config::Deployment`]), resource names ([`names`]), what a model may
//!   ask of its sandbox ([`model_limits`]), and every SageMaker request member and header
//!   with its state and range ([`members`]).
//! - Routing: the fleet and variant for a request ([`routing`]), sticky per-key assignment
//!   by weighted rendezvous hashing ([`sticky`]), traffic shares learned from outcomes by a
//!   multi-armed bandit ([`bandit`]).
//! - Changes: weight and instance-count updates ([`capacity`]), deployment plans and
//!   their steps ([`rollout`]), target tracking as Application Auto Scaling does it
//!   ([`target_tracking`]) and the scalable targets and policies it runs for a variant
//!   ([`autoscaling`]).
//! - Metrics: CloudWatch's datapoints, retention and query rules ([`metric_data`]).
//! - Judgement: alarm rules over per-second request windows ([`metric_alarm`]), A/B experiment
//!   statistics and the automatic action on a verdict ([`ab_test`]), shadow response
//!   comparison ([`shadow`]), model quality over predictions joined with ground truth
//!   ([`model_quality`]) and when its executions are due ([`monitoring_schedule`]).
//! - Data capture: what a `DataCaptureConfig` may be, which requests are sampled, the
//!   records and files SageMaker writes ([`data_capture`]).
//! - Authorization: whether an access key's IAM-style policy allows an action on a resource
//!   ([`iam`]).
//! - Batch transform: a transform job's settings, records split and packed into requests,
//!   responses assembled into each input's output ([`batch_transform`]).
//! - Scheduling: whether a wasi-nn computation runs inline or on the backend pool
//!   ([`compute_placement`]).

pub mod ab_test;
pub mod async_inference;
pub mod autoscaling;
pub mod bandit;
pub mod batch_transform;
pub mod capacity;
pub mod compute_placement;
pub mod config;
pub mod data_capture;
pub mod deployment_file;
pub mod iam;
pub mod members;
pub mod metric_alarm;
pub mod metric_data;
pub mod model_cache;
pub mod model_limits;
pub mod model_quality;
pub mod monitoring_schedule;
pub mod names;
pub mod pipeline;
pub mod rollout;
pub mod rollout_machine;
pub mod routing;
pub mod shadow;
pub mod sticky;
pub mod target_tracking;
