//! Durable state: models, endpoint configs and endpoints (with their status and desired
//! weights and instance counts), the experiments' ledger (which variant served each
//! inference id) and outcome statistics, and Application Auto Scaling's scalable targets,
//! scaling policies and scaling activities, model quality job definitions, monitoring
//! schedules and their executions, CloudWatch alarms' states and history, in an embedded
//! SQLite database,
//! `<data-dir>/plinth.db`.
//!
//! Every change is one transaction in WAL mode with `synchronous = FULL`, so a crash at any
//! moment (including `kill -9`) leaves the last committed state and nothing half-written.
//! Definitions are stored as the JSON of the API request that made them; this module does
//! not interpret them.

use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;
use std::sync::Mutex;

/// The schema version this build writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 12;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS models (
    name       TEXT PRIMARY KEY COLLATE NOCASE,
    created    REAL NOT NULL,
    definition TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS endpoint_configs (
    name       TEXT PRIMARY KEY COLLATE NOCASE,
    created    REAL NOT NULL,
    definition TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alarms (
    name       TEXT PRIMARY KEY COLLATE NOCASE,
    created    REAL NOT NULL,
    definition TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS endpoint_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint    TEXT NOT NULL COLLATE NOCASE,
    event       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS endpoint_events_by_endpoint ON endpoint_events (endpoint, seq);
CREATE TABLE IF NOT EXISTS endpoints (
    name        TEXT PRIMARY KEY COLLATE NOCASE,
    record      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS inferences (
    endpoint    TEXT NOT NULL,
    id          TEXT NOT NULL,
    config      TEXT NOT NULL,
    variant     TEXT NOT NULL,
    served      REAL NOT NULL,
    expires     REAL NOT NULL,
    outcome     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (endpoint, id)
);
CREATE INDEX IF NOT EXISTS inferences_expiry ON inferences (expires);
CREATE TABLE IF NOT EXISTS experiment_arms (
    endpoint    TEXT NOT NULL,
    config      TEXT NOT NULL,
    variant     TEXT NOT NULL,
    invocations INTEGER NOT NULL,
    errors      INTEGER NOT NULL,
    latency_sum REAL NOT NULL,
    n           INTEGER NOT NULL,
    sum         REAL NOT NULL,
    sum_sq      REAL NOT NULL,
    PRIMARY KEY (endpoint, config, variant)
);
CREATE TABLE IF NOT EXISTS scalable_targets (
    resource_id TEXT NOT NULL,
    dimension   TEXT NOT NULL,
    created     REAL NOT NULL,
    definition  TEXT NOT NULL,
    PRIMARY KEY (resource_id, dimension)
);
CREATE TABLE IF NOT EXISTS scaling_policies (
    resource_id TEXT NOT NULL,
    dimension   TEXT NOT NULL,
    name        TEXT NOT NULL,
    created     REAL NOT NULL,
    definition  TEXT NOT NULL,
    PRIMARY KEY (resource_id, dimension, name)
);
CREATE TABLE IF NOT EXISTS scaling_activities (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    resource_id TEXT NOT NULL,
    dimension   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    activity    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS scaling_activities_by_target
    ON scaling_activities (resource_id, dimension, seq);
CREATE TABLE IF NOT EXISTS transform_jobs (
    name           TEXT PRIMARY KEY COLLATE NOCASE,
    created        REAL NOT NULL,
    modified       REAL NOT NULL,
    status         TEXT NOT NULL,
    definition     TEXT NOT NULL,
    failure_reason TEXT,
    ended          REAL,
    progress       TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS model_quality_job_definitions (
    name       TEXT PRIMARY KEY COLLATE NOCASE,
    created    REAL NOT NULL,
    definition TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS monitoring_schedules (
    name       TEXT PRIMARY KEY COLLATE NOCASE,
    created    REAL NOT NULL,
    definition TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS monitoring_executions (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    schedule   TEXT NOT NULL COLLATE NOCASE,
    scheduled  REAL NOT NULL,
    execution  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS monitoring_executions_by_schedule
    ON monitoring_executions (schedule, seq);
CREATE TABLE IF NOT EXISTS transform_inputs (
    job      TEXT NOT NULL COLLATE NOCASE,
    input    TEXT NOT NULL,
    location TEXT NOT NULL,
    size     INTEGER NOT NULL DEFAULT 0,
    done     INTEGER NOT NULL DEFAULT 0,
    records  INTEGER NOT NULL DEFAULT 0,
    bytes    INTEGER NOT NULL DEFAULT 0,
    compared TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (job, input)
);
CREATE TABLE IF NOT EXISTS alarm_states (
    name          TEXT PRIMARY KEY COLLATE NOCASE,
    state         TEXT NOT NULL,
    reason        TEXT NOT NULL,
    reason_data   TEXT,
    updated       REAL NOT NULL,
    transitioned  REAL NOT NULL,
    configured    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS alarm_history (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    name     TEXT NOT NULL COLLATE NOCASE,
    time     REAL NOT NULL,
    kind     TEXT NOT NULL,
    summary  TEXT NOT NULL,
    data     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alarm_history_by_time ON alarm_history (time);
";

/// Scaling activities kept per scalable target; older ones are dropped as new ones come.
const ACTIVITIES_KEPT: i64 = 1_000;

/// Monitoring executions kept per schedule; older ones are dropped as new ones come.
const EXECUTIONS_KEPT: i64 = 1_000;

/// Events kept per endpoint; older ones are dropped as new ones come.
const EVENTS_KEPT: i64 = 10_000;

/// Append an event (on a connection or in a transaction), dropping the endpoint's oldest
/// beyond [`EVENTS_KEPT`]; its sequence number.
fn append_event(
    conn: &Connection,
    endpoint: &str,
    event: &serde_json::Value,
) -> Result<i64, StoreError> {
    conn.execute(
        "INSERT INTO endpoint_events (endpoint, event) VALUES (?1, ?2)",
        params![endpoint, event.to_string()],
    )?;
    let seq = conn.last_insert_rowid();
    if seq % 1000 == 0 {
        conn.execute(
            "DELETE FROM endpoint_events WHERE endpoint = ?1 AND seq <= ?2",
            params![endpoint, seq - EVENTS_KEPT],
        )?;
    }
    Ok(seq)
}

/// One inference an experiment tracks: who served it and whether it has its outcome.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Served {
    pub(crate) endpoint: String,
    pub(crate) id: String,
    pub(crate) config: String,
    pub(crate) variant: String,
    pub(crate) served: f64,
    /// After this an outcome is refused as expired (and the entry is dropped after as long
    /// again).
    pub(crate) expires: f64,
    pub(crate) outcome: bool,
}

/// One variant's counts in one experiment (endpoint and config).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ArmRow {
    pub(crate) endpoint: String,
    pub(crate) config: String,
    pub(crate) variant: String,
    pub(crate) invocations: u64,
    /// Invocations that failed.
    pub(crate) errors: u64,
    /// Model latency summed over successful invocations, in seconds.
    pub(crate) latency_sum: f64,
    pub(crate) n: u64,
    pub(crate) sum: f64,
    pub(crate) sum_sq: f64,
}

/// A stored definition: a model or an endpoint config.
#[derive(Debug, Clone)]
pub(crate) struct Definition {
    pub(crate) name: String,
    /// Epoch seconds.
    pub(crate) created: f64,
    pub(crate) definition: Value,
}

/// One variant's desired weight and instance count, as last committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct VariantCapacity {
    pub(crate) variant: String,
    pub(crate) weight: f64,
    pub(crate) instance_count: usize,
    /// A serverless variant's `MaxConcurrency` and `ProvisionedConcurrency`, as last set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) serverless: Option<(usize, usize)>,
}

/// An endpoint as committed: which config it serves, its status, and the weights and
/// instance counts it was last asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct EndpointRecord {
    pub(crate) name: String,
    /// The endpoint config it serves (or, while `Creating`, is being created with).
    pub(crate) config_name: String,
    /// The config an `UpdateEndpoint` in progress is moving to.
    pub(crate) pending_config: Option<String>,
    /// SageMaker's `EndpointStatus`.
    pub(crate) status: String,
    pub(crate) failure_reason: Option<String>,
    pub(crate) created: f64,
    pub(crate) modified: f64,
    /// Empty while `Creating`: the config's initial values apply.
    pub(crate) capacities: Vec<VariantCapacity>,
    /// The last `DeploymentConfig` given (SageMaker's `LastDeploymentConfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) deployment_config: Option<plinth_policy::rollout::DeploymentConfig>,
}

/// What a write found in the way.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("{0} already exists")]
    Exists(String),
    #[error("the state database failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the state database holds a record that does not parse: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// A transaction of several writes failed (each is told why).
    #[error("{0}")]
    Failed(String),
}

/// Everything in the database, read at start.
pub(crate) struct Contents {
    pub(crate) models: Vec<Definition>,
    pub(crate) configs: Vec<Definition>,
    pub(crate) alarms: Vec<Definition>,
    pub(crate) endpoints: Vec<EndpointRecord>,
    pub(crate) scaling: ScalingRows,
}

/// A scalable target or scaling policy as stored: the target's key, the policy's name, when
/// it was first made and its definition (the API's shape).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ScalingRow {
    pub(crate) resource_id: String,
    pub(crate) dimension: String,
    /// The policy's name; `None` for a target.
    pub(crate) name: Option<String>,
    pub(crate) created: f64,
    pub(crate) definition: Value,
}

/// Every scalable target and scaling policy.
#[derive(Debug, Default)]
pub(crate) struct ScalingRows {
    pub(crate) targets: Vec<ScalingRow>,
    pub(crate) policies: Vec<ScalingRow>,
}

/// A scaling activity as stored.
#[derive(Debug, Clone)]
pub(crate) struct StoredActivity {
    pub(crate) seq: i64,
    pub(crate) resource_id: String,
    pub(crate) dimension: String,
    pub(crate) kind: ActivityKind,
    pub(crate) activity: Value,
}

/// A transform job as the store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TransformJobRow {
    pub(crate) name: String,
    pub(crate) created: f64,
    /// When its status or progress last changed.
    pub(crate) modified: f64,
    /// `InProgress`, `Completed`, `Failed`, `Stopping` or `Stopped`.
    pub(crate) status: String,
    /// The CreateTransformJob input it was created with.
    pub(crate) definition: Value,
    pub(crate) failure_reason: Option<String>,
    pub(crate) ended: Option<f64>,
    /// What it has done: inputs, records and bytes completed.
    pub(crate) progress: Value,
}

/// One input of a transform job.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TransformInput {
    /// Its name relative to the job's prefix (its output's name less `.out`).
    pub(crate) name: String,
    /// Where it is.
    pub(crate) location: String,
    /// Its size in bytes when listed (0: not known).
    pub(crate) size: u64,
    /// Records and bytes, once it is complete.
    pub(crate) done: Option<(u64, u64)>,
    /// Once it is complete, per compared model, `[records, exact, close, same class]`.
    pub(crate) compared: Value,
}

/// The asynchronous queue as a Plinth before schema 12 kept it ([`Store::legacy_queue`]).
#[derive(Debug, Default)]
pub(crate) struct LegacyQueue {
    pub(crate) jobs: Vec<LegacyJob>,
    pub(crate) notifications: Vec<LegacyNotification>,
}

/// A job waiting or running in a legacy queue.
#[derive(Debug)]
pub(crate) struct LegacyJob {
    pub(crate) endpoint: String,
    pub(crate) id: String,
    pub(crate) accepted: f64,
    pub(crate) attempts: u32,
    /// The request, as JSON text.
    pub(crate) job: String,
}

/// A notification not yet delivered in a legacy queue.
#[derive(Debug)]
pub(crate) struct LegacyNotification {
    pub(crate) endpoint: String,
    pub(crate) url: String,
    pub(crate) message: String,
    pub(crate) attempts: u32,
    pub(crate) next_at: f64,
    pub(crate) last_try: Option<String>,
    /// When its job was accepted (0 when unknown).
    pub(crate) accepted: f64,
}

/// What a scaling activity did: the controller reads the last of each kind for its
/// cooldowns; DescribeScalingActivities leaves `NotScaled` out unless asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ActivityKind {
    ScaleOut,
    ScaleIn,
    NotScaled,
}

impl ActivityKind {
    fn as_str(self) -> &'static str {
        match self {
            ActivityKind::ScaleOut => "out",
            ActivityKind::ScaleIn => "in",
            ActivityKind::NotScaled => "not-scaled",
        }
    }
}

/// The definition tables.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Model,
    EndpointConfig,
    Alarm,
    ModelQualityJobDefinition,
    MonitoringSchedule,
}

impl Kind {
    fn table(self) -> &'static str {
        match self {
            Kind::Model => "models",
            Kind::EndpointConfig => "endpoint_configs",
            Kind::Alarm => "alarms",
            Kind::ModelQualityJobDefinition => "model_quality_job_definitions",
            Kind::MonitoringSchedule => "monitoring_schedules",
        }
    }
}

/// One monitoring execution as stored: its sequence number and record (the API's
/// `MonitoringExecutionSummary`, with Plinth's additions).
#[derive(Debug, Clone)]
pub(crate) struct StoredExecution {
    pub(crate) seq: i64,
    pub(crate) execution: Value,
}

/// Every definition of `kind`, by name.
fn read_definitions(conn: &Connection, kind: Kind) -> Result<Vec<Definition>, StoreError> {
    let mut statement = conn.prepare(&format!(
        "SELECT name, created, definition FROM {} ORDER BY name",
        kind.table()
    ))?;
    let rows = statement.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, f64>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (name, created, text) = row?;
        out.push(Definition {
            name,
            created,
            definition: serde_json::from_str(&text)?,
        });
    }
    Ok(out)
}

/// The database. One connection; writes are short, so a mutex is enough.
pub(crate) struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Open (or create) `<dir>/plinth.db`.
    pub(crate) fn open(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("plinth.db");
        let conn = Connection::open(&path).map_err(|e| {
            anyhow::anyhow!("cannot open the state database {}: {e}", path.display())
        })?;
        Self::init(conn)
            .map_err(|e| anyhow::anyhow!("cannot use the state database {}: {e}", path.display()))
    }

    /// An in-memory database, for servers without a data directory (tests, embedding).
    pub(crate) fn in_memory() -> anyhow::Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> anyhow::Result<Self> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            anyhow::bail!(
                "it was written by a newer Plinth (schema {version}; this build knows {SCHEMA_VERSION})"
            );
        }
        if version == 8 {
            // Schema 9 keeps each transform input's location, size and comparison; the
            // inputs of schema 8's jobs are listed again when they run.
            conn.execute_batch("DROP TABLE IF EXISTS transform_inputs")?;
        }
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Everything, as committed.
    pub(crate) fn load(&self) -> Result<Contents, StoreError> {
        let conn = self.conn();
        let models = read_definitions(&conn, Kind::Model)?;
        let configs = read_definitions(&conn, Kind::EndpointConfig)?;
        let alarms = read_definitions(&conn, Kind::Alarm)?;
        let mut statement = conn.prepare("SELECT record FROM endpoints ORDER BY name")?;
        let mut endpoints = Vec::new();
        for text in statement.query_map([], |r| r.get::<_, String>(0))? {
            endpoints.push(serde_json::from_str(&text?)?);
        }
        let mut scaling = ScalingRows::default();
        let mut statement = conn.prepare(
            "SELECT resource_id, dimension, NULL, created, definition FROM scalable_targets \
             UNION ALL SELECT resource_id, dimension, name, created, definition \
             FROM scaling_policies ORDER BY 1, 2, 3",
        )?;
        let rows = statement.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, f64>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        for row in rows {
            let (resource_id, dimension, name, created, text) = row?;
            let row = ScalingRow {
                resource_id,
                dimension,
                created,
                definition: serde_json::from_str(&text)?,
                name,
            };
            if row.name.is_some() {
                scaling.policies.push(row);
            } else {
                scaling.targets.push(row);
            }
        }
        Ok(Contents {
            models,
            configs,
            alarms,
            endpoints,
            scaling,
        })
    }

    /// Add a model or endpoint config; refuses a name that exists (ignoring case).
    pub(crate) fn insert(&self, kind: Kind, definition: &Definition) -> Result<(), StoreError> {
        let conn = self.conn();
        let inserted = conn.execute(
            &format!(
                "INSERT INTO {} (name, created, definition) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(name) DO NOTHING",
                kind.table()
            ),
            params![
                definition.name,
                definition.created,
                definition.definition.to_string()
            ],
        )?;
        if inserted == 0 {
            return Err(StoreError::Exists(definition.name.clone()));
        }
        Ok(())
    }

    /// Every definition of `kind` (read from the database: monitoring definitions and
    /// schedules are not kept in memory).
    pub(crate) fn definitions(&self, kind: Kind) -> Result<Vec<Definition>, StoreError> {
        read_definitions(&self.conn(), kind)
    }

    /// The definition of `kind` named `name` (ignoring case).
    pub(crate) fn definition(
        &self,
        kind: Kind,
        name: &str,
    ) -> Result<Option<Definition>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare(&format!(
            "SELECT name, created, definition FROM {} WHERE name = ?1",
            kind.table()
        ))?;
        let mut rows = statement.query(params![name])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let text: String = row.get(2)?;
        Ok(Some(Definition {
            name: row.get(0)?,
            created: row.get(1)?,
            definition: serde_json::from_str(&text)?,
        }))
    }

    /// Each schedule's latest scheduled time (epoch seconds), counting only executions
    /// scheduled since the schedule was created (not those of a deleted one of its name).
    pub(crate) fn last_scheduled(&self) -> Result<Vec<(String, f64)>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare(
            "SELECT s.name, MAX(e.scheduled) FROM monitoring_executions e \
             JOIN monitoring_schedules s ON s.name = e.schedule \
             WHERE e.scheduled >= s.created - 0.001 GROUP BY s.name",
        )?;
        let rows =
            statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row?);
        }
        Ok(out)
    }

    /// The newest execution of `schedule` scheduled at or after `since` (epoch seconds).
    pub(crate) fn last_execution(
        &self,
        schedule: &str,
        since: f64,
    ) -> Result<Option<Value>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare(
            "SELECT execution FROM monitoring_executions WHERE schedule = ?1 \
             AND scheduled >= ?2 ORDER BY seq DESC LIMIT 1",
        )?;
        let mut rows = statement.query(params![schedule, since - 0.001])?;
        match rows.next()? {
            Some(row) => Ok(Some(serde_json::from_str(&row.get::<_, String>(0)?)?)),
            None => Ok(None),
        }
    }

    /// Executions left `InProgress` by a stop or crash, marked `Failed` with `reason`; how
    /// many.
    pub(crate) fn fail_interrupted_executions(
        &self,
        reason: &str,
        at: f64,
    ) -> Result<usize, StoreError> {
        Ok(self.conn().execute(
            "UPDATE monitoring_executions SET execution = json_set(execution, \
             '$.MonitoringExecutionStatus', 'Failed', '$.FailureReason', ?1, \
             '$.LastModifiedTime', ?2) \
             WHERE json_extract(execution, '$.MonitoringExecutionStatus') = 'InProgress'",
            params![reason, at],
        )?)
    }

    /// Replace the stored definition of `definition.name`; whether it was there.
    pub(crate) fn replace(&self, kind: Kind, definition: &Definition) -> Result<bool, StoreError> {
        let updated = self.conn().execute(
            &format!(
                "UPDATE {} SET definition = ?2 WHERE name = ?1",
                kind.table()
            ),
            params![definition.name, definition.definition.to_string()],
        )?;
        Ok(updated > 0)
    }

    /// Write a monitoring execution: a new one (`seq` none; its number returned), or a
    /// change to one.
    pub(crate) fn put_execution(
        &self,
        seq: Option<i64>,
        schedule: &str,
        scheduled: f64,
        execution: &Value,
    ) -> Result<i64, StoreError> {
        let conn = self.conn();
        match seq {
            Some(seq) => {
                conn.execute(
                    "UPDATE monitoring_executions SET execution = ?2 WHERE seq = ?1",
                    params![seq, execution.to_string()],
                )?;
                Ok(seq)
            }
            None => {
                conn.execute(
                    "INSERT INTO monitoring_executions (schedule, scheduled, execution) \
                     VALUES (?1, ?2, ?3)",
                    params![schedule, scheduled, execution.to_string()],
                )?;
                let seq = conn.last_insert_rowid();
                conn.execute(
                    "DELETE FROM monitoring_executions WHERE schedule = ?1 AND seq NOT IN \
                     (SELECT seq FROM monitoring_executions WHERE schedule = ?1 \
                      ORDER BY seq DESC LIMIT ?2)",
                    params![schedule, EXECUTIONS_KEPT],
                )?;
                Ok(seq)
            }
        }
    }

    /// The executions of `schedule` (every schedule's, if none), oldest first.
    pub(crate) fn executions(
        &self,
        schedule: Option<&str>,
    ) -> Result<Vec<StoredExecution>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare(
            "SELECT seq, execution FROM monitoring_executions \
             WHERE ?1 IS NULL OR schedule = ?1 ORDER BY seq",
        )?;
        let rows = statement.query_map(params![schedule], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, text) = row?;
            out.push(StoredExecution {
                seq,
                execution: serde_json::from_str(&text)?,
            });
        }
        Ok(out)
    }

    /// Remove a model or endpoint config; whether it was there.
    pub(crate) fn delete(&self, kind: Kind, name: &str) -> Result<bool, StoreError> {
        let deleted = self.conn().execute(
            &format!("DELETE FROM {} WHERE name = ?1", kind.table()),
            params![name],
        )?;
        Ok(deleted > 0)
    }

    /// Write an endpoint's record (insert or replace).
    #[cfg(test)]
    pub(crate) fn put_endpoint(&self, record: &EndpointRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO endpoints (name, record) VALUES (?1, ?2) \
             ON CONFLICT(name) DO UPDATE SET record = excluded.record",
            params![record.name, serde_json::to_string(record)?],
        )?;
        Ok(())
    }

    /// Write an endpoint's record and an event about it in one transaction; the event's
    /// sequence number.
    pub(crate) fn put_endpoint_with_event(
        &self,
        record: &EndpointRecord,
        event: &serde_json::Value,
    ) -> Result<i64, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO endpoints (name, record) VALUES (?1, ?2) \
             ON CONFLICT(name) DO UPDATE SET record = excluded.record",
            params![record.name, serde_json::to_string(record)?],
        )?;
        let seq = append_event(&tx, &record.name, event)?;
        tx.commit()?;
        Ok(seq)
    }

    /// Record an event about an endpoint; its sequence number.
    pub(crate) fn put_event(
        &self,
        endpoint: &str,
        event: &serde_json::Value,
    ) -> Result<i64, StoreError> {
        append_event(&self.conn(), endpoint, event)
    }

    /// An endpoint's events after sequence number `after`, oldest first, at most `limit`.
    pub(crate) fn events(
        &self,
        endpoint: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, serde_json::Value)>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare(
            "SELECT seq, event FROM endpoint_events WHERE endpoint = ?1 AND seq > ?2 \
             ORDER BY seq LIMIT ?3",
        )?;
        let rows = statement.query_map(params![endpoint, after, limit as i64], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, text) = row?;
            out.push((seq, serde_json::from_str(&text)?));
        }
        Ok(out)
    }

    /// The sequence number of an endpoint's newest event (0 if it has none).
    pub(crate) fn last_event(&self, endpoint: &str) -> Result<i64, StoreError> {
        Ok(self.conn().query_row(
            "SELECT COALESCE(MAX(seq), 0) FROM endpoint_events WHERE endpoint = ?1",
            params![endpoint],
            |r| r.get(0),
        )?)
    }

    /// Add a new endpoint's record; refuses a name that exists (ignoring case).
    pub(crate) fn insert_endpoint(&self, record: &EndpointRecord) -> Result<(), StoreError> {
        let inserted = self.conn().execute(
            "INSERT INTO endpoints (name, record) VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING",
            params![record.name, serde_json::to_string(record)?],
        )?;
        if inserted == 0 {
            return Err(StoreError::Exists(record.name.clone()));
        }
        Ok(())
    }

    /// Remove an endpoint's record and its events.
    pub(crate) fn delete_endpoint(&self, name: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let deleted = tx.execute("DELETE FROM endpoints WHERE name = ?1", params![name])?;
        tx.execute(
            "DELETE FROM endpoint_events WHERE endpoint = ?1",
            params![name],
        )?;
        tx.commit()?;
        Ok(deleted > 0)
    }

    /// Write what the experiments gathered since the last flush, in one transaction:
    /// newly served inferences, outcomes received, every arm's counts; and drop entries
    /// whose tombstone time has passed (`expires + (expires - served) < now`).
    pub(crate) fn flush_experiments(
        &self,
        served: &[Served],
        outcomes: &[(String, String)],
        arms: &[ArmRow],
        now: f64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO inferences \
                 (endpoint, id, config, variant, served, expires, outcome) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for s in served {
                insert.execute(params![
                    s.endpoint, s.id, s.config, s.variant, s.served, s.expires, s.outcome
                ])?;
            }
            let mut mark = tx.prepare_cached(
                "UPDATE inferences SET outcome = 1 WHERE endpoint = ?1 AND id = ?2",
            )?;
            for (endpoint, id) in outcomes {
                mark.execute(params![endpoint, id])?;
            }
            let mut arm = tx.prepare_cached(
                "INSERT OR REPLACE INTO experiment_arms \
                 (endpoint, config, variant, invocations, errors, latency_sum, n, sum, sum_sq) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for a in arms {
                arm.execute(params![
                    a.endpoint,
                    a.config,
                    a.variant,
                    a.invocations as i64,
                    a.errors as i64,
                    a.latency_sum,
                    a.n as i64,
                    a.sum,
                    a.sum_sq
                ])?;
            }
            tx.execute(
                "DELETE FROM inferences WHERE 2 * expires - served < ?1",
                params![now],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every tracked inference (tombstones included).
    pub(crate) fn load_inferences(&self) -> Result<Vec<Served>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare(
            "SELECT endpoint, id, config, variant, served, expires, outcome FROM inferences \
             ORDER BY served",
        )?;
        let rows = statement.query_map([], |r| {
            Ok(Served {
                endpoint: r.get(0)?,
                id: r.get(1)?,
                config: r.get(2)?,
                variant: r.get(3)?,
                served: r.get(4)?,
                expires: r.get(5)?,
                outcome: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every experiment arm.
    pub(crate) fn load_arms(&self) -> Result<Vec<ArmRow>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare(
            "SELECT endpoint, config, variant, invocations, errors, latency_sum, n, sum, sum_sq \
             FROM experiment_arms",
        )?;
        let rows = statement.query_map([], |r| {
            Ok(ArmRow {
                endpoint: r.get(0)?,
                config: r.get(1)?,
                variant: r.get(2)?,
                invocations: r.get::<_, i64>(3)? as u64,
                errors: r.get::<_, i64>(4)? as u64,
                latency_sum: r.get(5)?,
                n: r.get::<_, i64>(6)? as u64,
                sum: r.get(7)?,
                sum_sq: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Write a scalable target, or a scaling policy when `row.name` is given (insert or
    /// replace, keeping the first `created`).
    pub(crate) fn put_scaling(&self, row: &ScalingRow) -> Result<(), StoreError> {
        let conn = self.conn();
        match &row.name {
            None => conn.execute(
                "INSERT INTO scalable_targets (resource_id, dimension, created, definition) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT(resource_id, dimension) \
                 DO UPDATE SET definition = excluded.definition",
                params![
                    row.resource_id,
                    row.dimension,
                    row.created,
                    row.definition.to_string()
                ],
            )?,
            Some(name) => conn.execute(
                "INSERT INTO scaling_policies (resource_id, dimension, name, created, definition) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(resource_id, dimension, name) \
                 DO UPDATE SET definition = excluded.definition",
                params![
                    row.resource_id,
                    row.dimension,
                    name,
                    row.created,
                    row.definition.to_string()
                ],
            )?,
        };
        Ok(())
    }

    /// Remove a scaling policy (`name`), or a scalable target and all its policies in one
    /// transaction; whether it was there.
    pub(crate) fn delete_scaling(
        &self,
        resource_id: &str,
        dimension: &str,
        name: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let deleted = match name {
            Some(name) => tx.execute(
                "DELETE FROM scaling_policies WHERE resource_id = ?1 AND dimension = ?2 \
                 AND name = ?3",
                params![resource_id, dimension, name],
            )?,
            None => {
                tx.execute(
                    "DELETE FROM scaling_policies WHERE resource_id = ?1 AND dimension = ?2",
                    params![resource_id, dimension],
                )?;
                tx.execute(
                    "DELETE FROM scalable_targets WHERE resource_id = ?1 AND dimension = ?2",
                    params![resource_id, dimension],
                )?
            }
        };
        tx.commit()?;
        Ok(deleted > 0)
    }

    /// Record a scaling activity (`seq` `None`), or replace activity `seq` (its status
    /// changed); its sequence number. A target keeps its newest [`ACTIVITIES_KEPT`].
    pub(crate) fn put_activity(
        &self,
        seq: Option<i64>,
        resource_id: &str,
        dimension: &str,
        kind: ActivityKind,
        activity: &Value,
    ) -> Result<i64, StoreError> {
        let conn = self.conn();
        if let Some(seq) = seq {
            conn.execute(
                "UPDATE scaling_activities SET activity = ?2 WHERE seq = ?1",
                params![seq, activity.to_string()],
            )?;
            return Ok(seq);
        }
        conn.execute(
            "INSERT INTO scaling_activities (resource_id, dimension, kind, activity) \
             VALUES (?1, ?2, ?3, ?4)",
            params![resource_id, dimension, kind.as_str(), activity.to_string()],
        )?;
        let seq = conn.last_insert_rowid();
        if seq % 100 == 0 {
            conn.execute(
                "DELETE FROM scaling_activities WHERE resource_id = ?1 AND dimension = ?2 \
                 AND seq < (SELECT MIN(seq) FROM (SELECT seq FROM scaling_activities \
                 WHERE resource_id = ?1 AND dimension = ?2 ORDER BY seq DESC LIMIT ?3))",
                params![resource_id, dimension, ACTIVITIES_KEPT],
            )?;
        }
        Ok(seq)
    }

    /// Scaling activities newest first, before sequence number `before`, at most `limit`:
    /// of one target, of one resource's targets, or of all; not-scaled ones only with
    /// `not_scaled`.
    pub(crate) fn activities(
        &self,
        resource_id: Option<&str>,
        dimension: Option<&str>,
        not_scaled: bool,
        before: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Value)>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare(
            "SELECT seq, activity FROM scaling_activities WHERE seq < ?1 \
             AND (?2 IS NULL OR resource_id = ?2) AND (?3 IS NULL OR dimension = ?3) \
             AND (?4 OR kind != 'not-scaled') ORDER BY seq DESC LIMIT ?5",
        )?;
        let rows = statement.query_map(
            params![before, resource_id, dimension, not_scaled, limit as i64],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, text) = row?;
            out.push((seq, serde_json::from_str(&text)?));
        }
        Ok(out)
    }

    /// The activities still `InProgress` (a restart came before they settled).
    pub(crate) fn activities_in_progress(&self) -> Result<Vec<StoredActivity>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare(
            "SELECT seq, resource_id, dimension, kind, activity FROM scaling_activities \
             WHERE kind != 'not-scaled' AND activity LIKE '%\"StatusCode\":\"InProgress\"%'",
        )?;
        let rows = statement.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, resource_id, dimension, kind, text) = row?;
            let activity: Value = serde_json::from_str(&text)?;
            let kind = if kind == ActivityKind::ScaleIn.as_str() {
                ActivityKind::ScaleIn
            } else {
                ActivityKind::ScaleOut
            };
            if activity["StatusCode"] == "InProgress" {
                out.push(StoredActivity {
                    seq,
                    resource_id,
                    dimension,
                    kind,
                    activity,
                });
            }
        }
        Ok(out)
    }

    /// What a Plinth before schema 12 kept of the asynchronous queue in this database (the
    /// jobs waiting or running, the notifications not yet delivered), for the queue's log to
    /// take over ([`Store::drop_legacy_queue`] once it has); `None` when there is no such
    /// table.
    pub(crate) fn legacy_queue(&self) -> Result<Option<LegacyQueue>, StoreError> {
        let conn = self.conn();
        let tables: i64 = conn.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' \
             AND name IN ('async_jobs', 'async_notifications')",
            [],
            |r| r.get(0),
        )?;
        if tables < 2 {
            return Ok(None);
        }
        let mut statement = conn.prepare(
            "SELECT endpoint, id, accepted, attempts, job FROM async_jobs \
             WHERE state IN ('queued', 'running') ORDER BY seq",
        )?;
        let jobs = statement
            .query_map([], |r| {
                Ok(LegacyJob {
                    endpoint: r.get(0)?,
                    id: r.get(1)?,
                    accepted: r.get(2)?,
                    attempts: r.get(3)?,
                    job: r.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut statement = conn.prepare(
            "SELECT n.endpoint, n.url, n.message, n.attempts, n.next_at, n.last_try, \
             COALESCE(j.accepted, 0) FROM async_notifications n \
             LEFT JOIN async_jobs j ON j.seq = n.job WHERE n.state = 'pending' ORDER BY n.seq",
        )?;
        let notifications = statement
            .query_map([], |r| {
                Ok(LegacyNotification {
                    endpoint: r.get(0)?,
                    url: r.get(1)?,
                    message: r.get(2)?,
                    attempts: r.get(3)?,
                    next_at: r.get(4)?,
                    last_try: r.get(5)?,
                    accepted: r.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(Some(LegacyQueue {
            jobs,
            notifications,
        }))
    }

    /// Drop the tables a Plinth before schema 12 kept the asynchronous queue in.
    pub(crate) fn drop_legacy_queue(&self) -> Result<(), StoreError> {
        self.conn().execute_batch(
            "DROP TABLE IF EXISTS async_notifications; DROP TABLE IF EXISTS async_jobs;",
        )?;
        Ok(())
    }

    /// Store a new transform job, `InProgress`.
    pub(crate) fn insert_transform_job(
        &self,
        name: &str,
        created: f64,
        definition: &Value,
    ) -> Result<(), StoreError> {
        let inserted = self.conn().execute(
            "INSERT INTO transform_jobs (name, created, modified, status, definition) \
             VALUES (?1, ?2, ?2, 'InProgress', ?3) ON CONFLICT(name) DO NOTHING",
            params![name, created, definition.to_string()],
        )?;
        if inserted == 0 {
            return Err(StoreError::Exists(name.to_owned()));
        }
        Ok(())
    }

    /// The transform jobs: all of them, or the one named `name`.
    pub(crate) fn transform_jobs(
        &self,
        name: Option<&str>,
    ) -> Result<Vec<TransformJobRow>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare_cached(
            "SELECT name, created, modified, status, definition, failure_reason, ended, \
             progress FROM transform_jobs WHERE ?1 IS NULL OR name = ?1",
        )?;
        let rows = statement.query_map(params![name], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, f64>(1)?,
                r.get::<_, f64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, Option<f64>>(6)?,
                r.get::<_, String>(7)?,
            ))
        })?;
        let mut jobs = Vec::new();
        for row in rows {
            let (name, created, modified, status, definition, failure_reason, ended, progress) =
                row?;
            jobs.push(TransformJobRow {
                name,
                created,
                modified,
                status,
                definition: serde_json::from_str(&definition)?,
                failure_reason,
                ended,
                progress: serde_json::from_str(&progress)?,
            });
        }
        Ok(jobs)
    }

    /// Move transform job `name` from one of `from` to `status` (with its failure reason,
    /// and its end time when `ended`); whether it was in one of `from`.
    pub(crate) fn set_transform_status(
        &self,
        name: &str,
        from: &[&str],
        status: &str,
        failure_reason: Option<&str>,
        ended: Option<f64>,
    ) -> Result<bool, StoreError> {
        let conn = self.conn();
        let mut changed = 0;
        for old in from {
            changed += conn.execute(
                "UPDATE transform_jobs SET status = ?3, failure_reason = ?4, \
                 ended = COALESCE(?5, ended), modified = ?6 WHERE name = ?1 AND status = ?2",
                params![
                    name,
                    old,
                    status,
                    failure_reason,
                    ended,
                    crate::state::now()
                ],
            )?;
        }
        Ok(changed > 0)
    }

    /// Keep transform job `job`'s inputs (each its name, location and size in bytes, 0
    /// when not known), as listed when it first ran: a job that resumes runs these,
    /// whatever came under its prefix since.
    pub(crate) fn set_transform_inputs(
        &self,
        job: &str,
        inputs: &[TransformInput],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for input in inputs {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO transform_inputs (job, input, location, size) \
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![job, input.name, input.location, input.size as i64])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Record that transform job `job` completed input `input` (its `.out` written), with
    /// the job's progress now.
    pub(crate) fn transform_input_done(
        &self,
        job: &str,
        input: &str,
        (records, bytes): (u64, u64),
        compared: &Value,
        progress: &Value,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE transform_inputs SET done = 1, records = ?3, bytes = ?4, compared = ?5 \
             WHERE job = ?1 AND input = ?2",
            params![
                job,
                input,
                records as i64,
                bytes as i64,
                compared.to_string()
            ],
        )?;
        tx.execute(
            "UPDATE transform_jobs SET progress = ?2, modified = ?3 WHERE name = ?1",
            params![job, progress.to_string(), crate::state::now()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Transform job `job`'s progress as it ended.
    pub(crate) fn set_transform_progress(
        &self,
        job: &str,
        progress: &Value,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE transform_jobs SET progress = ?2 WHERE name = ?1",
            params![job, progress.to_string()],
        )?;
        Ok(())
    }

    /// Transform job `job`'s inputs in name order.
    pub(crate) fn transform_inputs(&self, job: &str) -> Result<Vec<TransformInput>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare_cached(
            "SELECT input, location, size, done, records, bytes, compared \
             FROM transform_inputs WHERE job = ?1 ORDER BY input",
        )?;
        let rows = statement.query_map(params![job], |r| {
            let done = r.get::<_, i64>(3)? != 0;
            let counts = (r.get::<_, i64>(4)? as u64, r.get::<_, i64>(5)? as u64);
            Ok(TransformInput {
                name: r.get(0)?,
                location: r.get(1)?,
                size: r.get::<_, i64>(2)? as u64,
                done: done.then_some(counts),
                compared: serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest activity of `kind` on a target: when it ended (`EndTime`), or started if it
    /// has not (epoch seconds).
    pub(crate) fn last_activity(
        &self,
        resource_id: &str,
        dimension: &str,
        kind: ActivityKind,
    ) -> Result<Option<f64>, StoreError> {
        use rusqlite::OptionalExtension;
        let text: Option<String> = self
            .conn()
            .query_row(
                "SELECT activity FROM scaling_activities WHERE resource_id = ?1 \
                 AND dimension = ?2 AND kind = ?3 ORDER BY seq DESC LIMIT 1",
                params![resource_id, dimension, kind.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        let Some(text) = text else {
            return Ok(None);
        };
        let activity: Value = serde_json::from_str(&text)?;
        Ok(activity["EndTime"]
            .as_f64()
            .or_else(|| activity["StartTime"].as_f64()))
    }

    /// An endpoint's record, if there is one.
    #[cfg(test)]
    pub(crate) fn endpoint(&self, name: &str) -> Result<Option<EndpointRecord>, StoreError> {
        use rusqlite::OptionalExtension;
        let text: Option<String> = self
            .conn()
            .query_row(
                "SELECT record FROM endpoints WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?;
        Ok(text.map(|t| serde_json::from_str(&t)).transpose()?)
    }
}

/// A CloudWatch alarm's state as stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AlarmStateRow {
    pub(crate) state: String,
    pub(crate) reason: String,
    pub(crate) reason_data: Option<String>,
    /// When the state or its reason last changed.
    pub(crate) updated: f64,
    /// When the state last changed.
    pub(crate) transitioned: f64,
    /// When the alarm's definition was last put.
    pub(crate) configured: f64,
}

/// One item of an alarm's history.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AlarmHistoryRow {
    pub(crate) name: String,
    pub(crate) time: f64,
    /// `ConfigurationUpdate`, `StateUpdate` or `Action`.
    pub(crate) kind: String,
    pub(crate) summary: String,
    pub(crate) data: String,
}

/// Which history items to read.
pub(crate) struct HistoryQuery<'a> {
    pub(crate) name: Option<&'a str>,
    pub(crate) kind: Option<&'a str>,
    pub(crate) start: f64,
    pub(crate) end: f64,
    pub(crate) ascending: bool,
    pub(crate) offset: usize,
    pub(crate) limit: usize,
}

impl Store {
    /// Every stored alarm state, by alarm name.
    pub(crate) fn alarm_states(&self) -> Result<Vec<(String, AlarmStateRow)>, StoreError> {
        let conn = self.conn();
        let mut select = conn.prepare(
            "SELECT name, state, reason, reason_data, updated, transitioned, configured \
             FROM alarm_states",
        )?;
        let rows = select.query_map([], |r| {
            Ok((
                r.get(0)?,
                AlarmStateRow {
                    state: r.get(1)?,
                    reason: r.get(2)?,
                    reason_data: r.get(3)?,
                    updated: r.get(4)?,
                    transitioned: r.get(5)?,
                    configured: r.get(6)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Store `name`'s state and, in the same transaction, a history item.
    pub(crate) fn save_alarm_state(
        &self,
        name: &str,
        row: &AlarmStateRow,
        history: Option<&AlarmHistoryRow>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO alarm_states \
             (name, state, reason, reason_data, updated, transitioned, configured) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (name) DO UPDATE SET \
             state = ?2, reason = ?3, reason_data = ?4, updated = ?5, transitioned = ?6, \
             configured = ?7",
            params![
                name,
                row.state,
                row.reason,
                row.reason_data,
                row.updated,
                row.transitioned,
                row.configured
            ],
        )?;
        if let Some(h) = history {
            insert_history(&tx, h)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Forget `name`'s state (its history stays, with `history` added).
    pub(crate) fn delete_alarm_state(
        &self,
        name: &str,
        history: &AlarmHistoryRow,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM alarm_states WHERE name = ?1", params![name])?;
        insert_history(&tx, history)?;
        tx.commit()?;
        Ok(())
    }

    /// History items as `query` asks, in time order (or its reverse).
    pub(crate) fn alarm_history(
        &self,
        query: &HistoryQuery<'_>,
    ) -> Result<Vec<AlarmHistoryRow>, StoreError> {
        let conn = self.conn();
        let order = if query.ascending { "ASC" } else { "DESC" };
        let mut select = conn.prepare(&format!(
            "SELECT name, time, kind, summary, data FROM alarm_history \
             WHERE (?1 IS NULL OR name = ?1) AND (?2 IS NULL OR kind = ?2) \
             AND time >= ?3 AND time <= ?4 ORDER BY time {order}, seq {order} \
             LIMIT ?5 OFFSET ?6"
        ))?;
        let rows = select.query_map(
            params![
                query.name,
                query.kind,
                query.start,
                query.end,
                query.limit as i64,
                query.offset as i64
            ],
            |r| {
                Ok(AlarmHistoryRow {
                    name: r.get(0)?,
                    time: r.get(1)?,
                    kind: r.get(2)?,
                    summary: r.get(3)?,
                    data: r.get(4)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Drop history items older than `before`; how many.
    pub(crate) fn forget_alarm_history(&self, before: f64) -> Result<usize, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM alarm_history WHERE time < ?1", params![before])?)
    }
}

fn insert_history(conn: &Connection, h: &AlarmHistoryRow) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO alarm_history (name, time, kind, summary, data) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![h.name, h.time, h.kind, h.summary, h.data],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn model(name: &str) -> Definition {
        Definition {
            name: name.into(),
            created: 1700000000.5,
            definition: json!({"PrimaryContainer": {"Image": "/x.wasm"}}),
        }
    }

    fn endpoint(name: &str, status: &str) -> EndpointRecord {
        EndpointRecord {
            name: name.into(),
            config_name: "c1".into(),
            pending_config: None,
            status: status.into(),
            failure_reason: None,
            created: 1.0,
            modified: 2.0,
            capacities: vec![VariantCapacity {
                variant: "A".into(),
                weight: 0.5,
                instance_count: 2,
                serverless: None,
            }],
            deployment_config: None,
        }
    }

    #[test]
    fn definitions_round_trip_and_names_are_unique_ignoring_case() {
        let store = Store::in_memory().unwrap();
        store.insert(Kind::Model, &model("iris")).unwrap();
        assert!(matches!(
            store.insert(Kind::Model, &model("IRIS")),
            Err(StoreError::Exists(_))
        ));
        // Another table, the same name: fine.
        store.insert(Kind::EndpointConfig, &model("iris")).unwrap();
        let contents = store.load().unwrap();
        assert_eq!(contents.models.len(), 1);
        assert_eq!(contents.models[0].created, 1700000000.5);
        assert_eq!(contents.models[0].definition, model("iris").definition);
        assert_eq!(contents.configs.len(), 1);
        assert!(store.delete(Kind::Model, "iris").unwrap());
        assert!(!store.delete(Kind::Model, "iris").unwrap());
        assert!(store.load().unwrap().models.is_empty());
    }

    #[test]
    fn endpoint_records_are_replaced_whole() {
        let store = Store::in_memory().unwrap();
        store.insert_endpoint(&endpoint("e", "Creating")).unwrap();
        assert!(matches!(
            store.insert_endpoint(&endpoint("E", "Creating")),
            Err(StoreError::Exists(_))
        ));
        let mut next = endpoint("e", "InService");
        next.pending_config = Some("c2".into());
        store.put_endpoint(&next).unwrap();
        assert_eq!(store.endpoint("e").unwrap(), Some(next.clone()));
        assert_eq!(store.load().unwrap().endpoints, vec![next]);
        assert!(store.delete_endpoint("e").unwrap());
        assert_eq!(store.endpoint("e").unwrap(), None);
    }

    #[test]
    fn a_reopened_database_has_what_was_committed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.insert(Kind::Model, &model("m")).unwrap();
            store.put_endpoint(&endpoint("e", "InService")).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let contents = store.load().unwrap();
        assert_eq!(contents.models.len(), 1);
        assert_eq!(contents.endpoints, vec![endpoint("e", "InService")]);
    }

    #[test]
    fn the_ledger_and_arms_round_trip_and_tombstones_expire() {
        let store = Store::in_memory().unwrap();
        let served = |id: &str, at: f64| Served {
            endpoint: "e".into(),
            id: id.into(),
            config: "c".into(),
            variant: "A".into(),
            served: at,
            expires: at + 10.0,
            outcome: false,
        };
        let arm = ArmRow {
            endpoint: "e".into(),
            config: "c".into(),
            variant: "A".into(),
            invocations: 2,
            errors: 1,
            latency_sum: 0.5,
            n: 1,
            sum: 1.0,
            sum_sq: 1.0,
        };
        store
            .flush_experiments(
                &[served("old", 0.0), served("new", 100.0)],
                &[],
                std::slice::from_ref(&arm),
                5.0,
            )
            .unwrap();
        store
            .flush_experiments(&[], &[("e".into(), "new".into())], &[], 25.0)
            .unwrap();
        // "old" served at 0, expired at 10, dropped after 20.
        let rows = store.load_inferences().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].id, "new");
        assert!(rows[0].outcome);
        assert_eq!(store.load_arms().unwrap(), vec![arm]);
    }

    #[test]
    fn scaling_targets_policies_and_activities_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let row = |name: Option<&str>, value: i64| ScalingRow {
            resource_id: "endpoint/e/variant/v".into(),
            dimension: "sagemaker:variant:DesiredInstanceCount".into(),
            name: name.map(str::to_string),
            created: 1.5,
            definition: json!({ "MaxCapacity": value }),
        };
        {
            let store = Store::open(dir.path()).unwrap();
            store.put_scaling(&row(None, 4)).unwrap();
            store.put_scaling(&row(None, 8)).unwrap();
            store.put_scaling(&row(Some("p1"), 1)).unwrap();
            store.put_scaling(&row(Some("p2"), 2)).unwrap();
            for i in 0..5 {
                let kind = if i % 2 == 0 {
                    ActivityKind::ScaleOut
                } else {
                    ActivityKind::NotScaled
                };
                let seq = store
                    .put_activity(
                        None,
                        "endpoint/e/variant/v",
                        "d",
                        kind,
                        &json!({"StartTime": i}),
                    )
                    .unwrap();
                if i == 4 {
                    store
                        .put_activity(
                            Some(seq),
                            "",
                            "",
                            kind,
                            &json!({"StartTime": 4, "StatusCode": "Successful"}),
                        )
                        .unwrap();
                }
            }
        }
        let store = Store::open(dir.path()).unwrap();
        let scaling = store.load().unwrap().scaling;
        assert_eq!(scaling.targets, vec![row(None, 8)], "replaced, one row");
        assert_eq!(
            scaling.policies,
            vec![row(Some("p1"), 1), row(Some("p2"), 2)]
        );
        let all = store.activities(None, None, true, i64::MAX, 10).unwrap();
        let times: Vec<i64> = all
            .iter()
            .map(|(_, a)| a["StartTime"].as_i64().unwrap())
            .collect();
        assert_eq!(times, vec![4, 3, 2, 1, 0], "newest first");
        assert_eq!(all[0].1["StatusCode"], "Successful");
        let scaled = store
            .activities(Some("endpoint/e/variant/v"), Some("d"), false, i64::MAX, 10)
            .unwrap();
        assert_eq!(scaled.len(), 3, "not-scaled left out");
        let page = store.activities(None, None, true, all[1].0, 2).unwrap();
        assert_eq!(
            page.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![all[2].0, all[3].0]
        );
        assert_eq!(
            store
                .last_activity("endpoint/e/variant/v", "d", ActivityKind::ScaleOut)
                .unwrap(),
            Some(4.0)
        );
        assert_eq!(
            store
                .last_activity("endpoint/e/variant/v", "d", ActivityKind::ScaleIn)
                .unwrap(),
            None
        );
        let (r, d) = (
            "endpoint/e/variant/v",
            "sagemaker:variant:DesiredInstanceCount",
        );
        assert!(store.delete_scaling(r, d, Some("p1")).unwrap());
        assert!(!store.delete_scaling(r, d, Some("p1")).unwrap());
        assert!(
            store.delete_scaling(r, d, None).unwrap(),
            "the target, and p2 with it"
        );
        let scaling = store.load().unwrap().scaling;
        assert!(scaling.targets.is_empty() && scaling.policies.is_empty());
    }

    #[test]
    fn a_target_keeps_its_newest_activities() {
        let store = Store::in_memory().unwrap();
        for i in 0..(ACTIVITIES_KEPT + 150) {
            store
                .put_activity(
                    None,
                    "r",
                    "d",
                    ActivityKind::ScaleOut,
                    &json!({"StartTime": i}),
                )
                .unwrap();
        }
        store
            .put_activity(
                None,
                "other",
                "d",
                ActivityKind::ScaleOut,
                &json!({"StartTime": 0}),
            )
            .unwrap();
        let kept = store
            .activities(Some("r"), None, true, i64::MAX, 5_000)
            .unwrap();
        assert!(
            kept.len() as i64 >= ACTIVITIES_KEPT && (kept.len() as i64) < ACTIVITIES_KEPT + 100,
            "{}",
            kept.len()
        );
        assert_eq!(kept[0].1["StartTime"], ACTIVITIES_KEPT + 149);
        assert_eq!(
            store
                .activities(Some("other"), None, true, i64::MAX, 5)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn schema_8_transform_inputs_are_listed_again() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .insert_transform_job("t", 1.0, &json!({"ModelName": "m"}))
                .unwrap();
            let conn = store.conn();
            // Schema 8's table: no location, size or comparison.
            conn.execute_batch(
                "DROP TABLE transform_inputs; \
                 CREATE TABLE transform_inputs (job TEXT NOT NULL, input TEXT NOT NULL, \
                 records INTEGER NOT NULL, bytes INTEGER NOT NULL, PRIMARY KEY (job, input)); \
                 INSERT INTO transform_inputs VALUES ('t', 'a.csv', 3, 30);",
            )
            .unwrap();
            conn.pragma_update(None, "user_version", 8).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.transform_inputs("t").unwrap(), vec![]);
        let input = TransformInput {
            name: "a.csv".into(),
            location: "/in/a.csv".into(),
            size: 30,
            done: None,
            compared: Value::Null,
        };
        store.set_transform_inputs("t", &[input]).unwrap();
        store
            .transform_input_done("t", "a.csv", (3, 30), &json!([[3, 3, 3, 3]]), &json!({}))
            .unwrap();
        let [listed] = &store.transform_inputs("t").unwrap()[..] else {
            panic!("one input")
        };
        assert_eq!((listed.done, listed.size), (Some((3, 30)), 30));
        assert_eq!(listed.compared, json!([[3, 3, 3, 3]]));
        assert_eq!(
            store.transform_jobs(Some("t")).unwrap()[0].status,
            "InProgress"
        );
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join("plinth.db")).unwrap();
            conn.pragma_update(None, "user_version", 99).unwrap();
        }
        let e = Store::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("newer Plinth"), "{e}");
    }
}
