//! Durable state: models, endpoint configs and endpoints (with their status and desired
//! weights and instance counts) in an embedded SQLite database, `<data-dir>/plinth.db`.
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
const SCHEMA_VERSION: i64 = 1;

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
CREATE TABLE IF NOT EXISTS endpoints (
    name        TEXT PRIMARY KEY COLLATE NOCASE,
    record      TEXT NOT NULL
);
";

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
}

/// Everything in the database, read at start.
pub(crate) struct Contents {
    pub(crate) models: Vec<Definition>,
    pub(crate) configs: Vec<Definition>,
    pub(crate) endpoints: Vec<EndpointRecord>,
}

/// The two definition tables.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Model,
    EndpointConfig,
}

impl Kind {
    fn table(self) -> &'static str {
        match self {
            Kind::Model => "models",
            Kind::EndpointConfig => "endpoint_configs",
        }
    }
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

    /// An in-memory database, for `plinth` runs without a data directory and for tests.
    #[cfg(test)]
    pub(crate) fn in_memory() -> Self {
        Self::init(Connection::open_in_memory().unwrap()).unwrap()
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
        let definitions = |kind: Kind| -> Result<Vec<Definition>, StoreError> {
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
        };
        let models = definitions(Kind::Model)?;
        let configs = definitions(Kind::EndpointConfig)?;
        let mut statement = conn.prepare("SELECT record FROM endpoints ORDER BY name")?;
        let mut endpoints = Vec::new();
        for text in statement.query_map([], |r| r.get::<_, String>(0))? {
            endpoints.push(serde_json::from_str(&text?)?);
        }
        Ok(Contents {
            models,
            configs,
            endpoints,
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

    /// Remove a model or endpoint config; whether it was there.
    pub(crate) fn delete(&self, kind: Kind, name: &str) -> Result<bool, StoreError> {
        let deleted = self.conn().execute(
            &format!("DELETE FROM {} WHERE name = ?1", kind.table()),
            params![name],
        )?;
        Ok(deleted > 0)
    }

    /// Write an endpoint's record (insert or replace).
    pub(crate) fn put_endpoint(&self, record: &EndpointRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO endpoints (name, record) VALUES (?1, ?2) \
             ON CONFLICT(name) DO UPDATE SET record = excluded.record",
            params![record.name, serde_json::to_string(record)?],
        )?;
        Ok(())
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

    /// Remove an endpoint's record.
    pub(crate) fn delete_endpoint(&self, name: &str) -> Result<bool, StoreError> {
        let deleted = self
            .conn()
            .execute("DELETE FROM endpoints WHERE name = ?1", params![name])?;
        Ok(deleted > 0)
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
            }],
        }
    }

    #[test]
    fn definitions_round_trip_and_names_are_unique_ignoring_case() {
        let store = Store::in_memory();
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
        let store = Store::in_memory();
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
