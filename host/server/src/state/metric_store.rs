//! The metric store: the CloudWatch datapoints of every series Plinth publishes
//! (`plinth_policy::metric_data`), one row per series, resolution and period, in
//! `<data-dir>/metrics.db`. The finest resolution is written as seconds end; the coarser
//! ones are merged from it in batches ([`MetricStore::roll_up`], its progress stored with
//! them, so that a restart neither loses nor repeats a merge); each resolution's rows older
//! than its retention are deleted ([`MetricStore::expire`]), which bounds the file.
//!
//! A database of its own (SQLite in WAL mode, `synchronous = NORMAL`): the metrics' writes
//! and long reads never wait on the control plane's store, nor it on them. A crash loses at
//! most the datapoints written since the last checkpoint's sync on a power failure (none on
//! a process kill) and never leaves the file inconsistent. Writes go through one connection
//! and reads through another, so a query never holds up the writer.

use plinth_policy::metric_data::{decode, encode, merge_datum, period_start, Datum, Tier};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// The schema version this build writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS metric_series (
    id          INTEGER PRIMARY KEY,
    namespace   TEXT NOT NULL,
    dimensions  TEXT NOT NULL,
    metrics     TEXT NOT NULL,
    last        INTEGER NOT NULL,
    UNIQUE (namespace, dimensions)
);
CREATE TABLE IF NOT EXISTS metric_points (
    series      INTEGER NOT NULL,
    resolution  INTEGER NOT NULL,
    t           INTEGER NOT NULL,
    datum       BLOB NOT NULL,
    PRIMARY KEY (series, resolution, t)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS metric_points_by_time ON metric_points (resolution, t);
CREATE TABLE IF NOT EXISTS metric_rollup (
    id            INTEGER PRIMARY KEY CHECK (id = 0),
    merged_until  INTEGER NOT NULL
);
";

/// One series' datapoint for one period of the finest resolution.
#[derive(Debug, Clone)]
pub(crate) struct Point {
    pub(crate) namespace: String,
    /// Name and value, in any order (stored sorted by name).
    pub(crate) dimensions: Vec<(String, String)>,
    /// The period's start, Unix seconds.
    pub(crate) t: i64,
    pub(crate) datum: Datum,
}

/// A series as ListMetrics shows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Series {
    pub(crate) id: i64,
    pub(crate) namespace: String,
    /// Sorted by name.
    pub(crate) dimensions: Vec<(String, String)>,
    /// Its metrics' names, sorted.
    pub(crate) metrics: Vec<String>,
    /// Its newest datapoint's time.
    pub(crate) last: i64,
}

/// A series' key: namespace and dimensions as stored.
type Key = (String, String);

/// What the writer knows of a series.
struct Known {
    id: i64,
    metrics: BTreeSet<String>,
    last: i64,
}

/// The metric store (see the module documentation).
pub(crate) struct MetricStore {
    writer: Mutex<Writer>,
    /// Another connection for queries; `None` in memory (the writer's then serves them).
    reader: Option<Mutex<Connection>>,
    tiers: Vec<Tier>,
}

struct Writer {
    conn: Connection,
    known: HashMap<Key, Known>,
}

fn failed(e: rusqlite::Error) -> String {
    format!("the metric store failed: {e}")
}

/// Dimensions as stored: a JSON array of `[name, value]`, sorted by name.
fn dimensions_text(dimensions: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = dimensions.iter().collect();
    sorted.sort();
    serde_json::to_string(&sorted).unwrap_or_default()
}

fn dimensions_of(text: &str) -> Vec<(String, String)> {
    serde_json::from_str(text).unwrap_or_default()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MetricStore {
    /// `<dir>/metrics.db`, created if need be, keeping `tiers` (at least one).
    pub(crate) fn open(dir: &Path, tiers: Vec<Tier>) -> Result<Self, String> {
        let path = dir.join("metrics.db");
        let open = || -> Result<Connection, String> {
            let conn = Connection::open(&path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(failed)?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(failed)?;
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(failed)?;
            Ok(conn)
        };
        let writer = open()?;
        Self::migrate(&writer)?;
        Ok(Self {
            writer: Mutex::new(Writer::new(writer)),
            reader: Some(Mutex::new(open()?)),
            tiers,
        })
    }

    /// A store in memory (gone with the process), keeping `tiers`.
    pub(crate) fn in_memory(tiers: Vec<Tier>) -> Result<Self, String> {
        let conn = Connection::open_in_memory().map_err(failed)?;
        Self::migrate(&conn)?;
        Ok(Self {
            writer: Mutex::new(Writer::new(conn)),
            reader: None,
            tiers,
        })
    }

    fn migrate(conn: &Connection) -> Result<(), String> {
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(failed)?;
        if version > SCHEMA_VERSION {
            return Err(format!(
                "the metric store was written by a newer Plinth (schema {version}; this build knows {SCHEMA_VERSION})"
            ));
        }
        conn.execute_batch(SCHEMA).map_err(failed)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(failed)
    }

    /// The resolutions kept, finest first.
    pub(crate) fn tiers(&self) -> &[Tier] {
        &self.tiers
    }

    /// Store `points` (each at the finest resolution; merged into a datapoint already there).
    /// A point at or before the coarser resolutions' merge mark is merged into them too.
    pub(crate) fn record(&self, points: &[Point]) -> Result<(), String> {
        let Some(finest) = self.tiers.first().copied() else {
            return Ok(());
        };
        let mut writer = lock(&self.writer);
        let Writer { conn, known } = &mut *writer;
        let tx = conn.transaction().map_err(failed)?;
        let merged_until = merged_until(&tx)?;
        for point in points {
            let key = (point.namespace.clone(), dimensions_text(&point.dimensions));
            let t = period_start(point.t, finest.resolution);
            let series = series_id(&tx, known, key, &point.datum, t)?;
            merge_row(&tx, series, finest.resolution, t, &point.datum)?;
            if merged_until.is_some_and(|m| t <= m) {
                for tier in &self.tiers[1..] {
                    let at = period_start(t, tier.resolution);
                    merge_row(&tx, series, tier.resolution, at, &point.datum)?;
                }
            }
        }
        tx.commit().map_err(failed)
    }

    /// Merge the finest resolution's datapoints after the last merge mark, up to and
    /// including `upto`, into every coarser resolution; the mark moves to `upto`. The
    /// datapoints merged.
    pub(crate) fn roll_up(&self, upto: i64) -> Result<usize, String> {
        let Some(finest) = self.tiers.first().copied() else {
            return Ok(0);
        };
        let mut writer = lock(&self.writer);
        let tx = writer.conn.transaction().map_err(failed)?;
        // The first merge takes everything stored so far.
        let from = merged_until(&tx)?.unwrap_or(i64::MIN);
        if upto <= from {
            return Ok(0);
        }
        let rows: Vec<(i64, i64, Vec<u8>)> = {
            let mut select = tx
                .prepare_cached(
                    "SELECT series, t, datum FROM metric_points \
                     WHERE resolution = ?1 AND t > ?2 AND t <= ?3",
                )
                .map_err(failed)?;
            let rows = select
                .query_map(params![finest.resolution as i64, from, upto], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .map_err(failed)?;
            rows.collect::<Result<_, _>>().map_err(failed)?
        };
        // Per series and coarser period, the merge of its finest datapoints.
        let mut merged: HashMap<(i64, u64, i64), Datum> = HashMap::new();
        for (series, t, bytes) in &rows {
            let datum = match decode(bytes) {
                Ok(datum) => datum,
                Err(e) => {
                    tracing::warn!(series, t, error = %e, "a stored datapoint cannot be read; it is left out of the coarser resolutions");
                    continue;
                }
            };
            for tier in &self.tiers[1..] {
                let at = period_start(*t, tier.resolution);
                merge_datum(
                    merged.entry((*series, tier.resolution, at)).or_default(),
                    &datum,
                );
            }
        }
        for ((series, resolution, t), datum) in &merged {
            merge_row(&tx, *series, *resolution, *t, datum)?;
        }
        tx.execute(
            "INSERT INTO metric_rollup (id, merged_until) VALUES (0, ?1) \
             ON CONFLICT (id) DO UPDATE SET merged_until = ?1",
            params![upto],
        )
        .map_err(failed)?;
        tx.commit().map_err(failed)?;
        Ok(rows.len())
    }

    /// Delete each resolution's datapoints older than its retention at `now` (the finest
    /// one's only once merged into the coarser ones), those of resolutions no longer kept,
    /// and the series left with none. The rows deleted.
    pub(crate) fn expire(&self, now: i64) -> Result<usize, String> {
        let mut writer = lock(&self.writer);
        let Writer { conn, known } = &mut *writer;
        let tx = conn.transaction().map_err(failed)?;
        let merged = merged_until(&tx)?.unwrap_or(i64::MIN);
        let mut deleted = 0;
        for (i, tier) in self.tiers.iter().enumerate() {
            let mut before = now - tier.retention as i64;
            if i == 0 && self.tiers.len() > 1 {
                before = before.min(merged.saturating_add(1));
            }
            deleted += tx
                .execute(
                    "DELETE FROM metric_points WHERE resolution = ?1 AND t < ?2",
                    params![tier.resolution as i64, before],
                )
                .map_err(failed)?;
        }
        let kept: Vec<String> = self
            .tiers
            .iter()
            .map(|t| t.resolution.to_string())
            .collect();
        deleted += tx
            .execute(
                &format!(
                    "DELETE FROM metric_points WHERE resolution NOT IN ({})",
                    if kept.is_empty() {
                        "0".to_string()
                    } else {
                        kept.join(", ")
                    }
                ),
                [],
            )
            .map_err(failed)?;
        let longest = self.tiers.iter().map(|t| t.retention).max().unwrap_or(0);
        let gone = tx
            .execute(
                "DELETE FROM metric_series WHERE last < ?1",
                params![now - longest as i64],
            )
            .map_err(failed)?;
        tx.commit().map_err(failed)?;
        if gone > 0 {
            known.clear();
        }
        Ok(deleted)
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T, String>) -> Result<T, String> {
        match &self.reader {
            Some(reader) => f(&lock(reader)),
            None => f(&lock(&self.writer).conn),
        }
    }

    /// The last second of the finest resolution merged into the coarser ones, if any.
    pub(crate) fn merged_until(&self) -> Result<Option<i64>, String> {
        self.read(merged_until)
    }

    /// Every series, in namespace and dimension order.
    pub(crate) fn series(&self) -> Result<Vec<Series>, String> {
        self.read(|conn| {
            let mut select = conn
                .prepare_cached(
                    "SELECT id, namespace, dimensions, metrics, last FROM metric_series \
                     ORDER BY namespace, dimensions",
                )
                .map_err(failed)?;
            let rows = select
                .query_map([], |r| {
                    Ok(Series {
                        id: r.get(0)?,
                        namespace: r.get(1)?,
                        dimensions: dimensions_of(&r.get::<_, String>(2)?),
                        metrics: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default(),
                        last: r.get(4)?,
                    })
                })
                .map_err(failed)?;
            rows.collect::<Result<_, _>>().map_err(failed)
        })
    }

    /// The series of `namespace` with exactly `dimensions`, if there is one.
    pub(crate) fn find(
        &self,
        namespace: &str,
        dimensions: &[(String, String)],
    ) -> Result<Option<i64>, String> {
        let text = dimensions_text(dimensions);
        self.read(|conn| {
            conn.query_row(
                "SELECT id FROM metric_series WHERE namespace = ?1 AND dimensions = ?2",
                params![namespace, text],
                |r| r.get(0),
            )
            .optional()
            .map_err(failed)
        })
    }

    /// `series`' datapoints of `resolution` in `[from, to)`, in time order: `metric`'s
    /// aggregate of each that has one.
    pub(crate) fn points(
        &self,
        series: i64,
        resolution: u64,
        from: i64,
        to: i64,
        metric: &str,
    ) -> Result<Vec<(i64, plinth_policy::metric_data::Aggregate)>, String> {
        self.read(|conn| {
            let mut select = conn
                .prepare_cached(
                    "SELECT t, datum FROM metric_points \
                     WHERE series = ?1 AND resolution = ?2 AND t >= ?3 AND t < ?4 ORDER BY t",
                )
                .map_err(failed)?;
            let rows = select
                .query_map(params![series, resolution as i64, from, to], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
                })
                .map_err(failed)?;
            let mut points = Vec::new();
            for row in rows {
                let (t, bytes) = row.map_err(failed)?;
                match decode(&bytes) {
                    Ok(mut datum) => {
                        if let Some(aggregate) = datum.remove(metric) {
                            points.push((t, aggregate));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(series, t, error = %e, "a stored datapoint cannot be read; it is left out")
                    }
                }
            }
            Ok(points)
        })
    }

    /// How many datapoints of `resolution` are stored.
    #[cfg(test)]
    fn rows(&self, resolution: u64) -> usize {
        self.read(|conn| {
            conn.query_row(
                "SELECT COUNT(*) FROM metric_points WHERE resolution = ?1",
                params![resolution as i64],
                |r| r.get::<_, i64>(0),
            )
            .map_err(failed)
        })
        .unwrap_or(0) as usize
    }
}

impl Writer {
    fn new(conn: Connection) -> Self {
        Self {
            conn,
            known: HashMap::new(),
        }
    }
}

/// The merge mark, if a merge was ever made.
fn merged_until(tx: &Connection) -> Result<Option<i64>, String> {
    tx.query_row(
        "SELECT merged_until FROM metric_rollup WHERE id = 0",
        [],
        |r| r.get(0),
    )
    .optional()
    .map_err(failed)
}

/// The id of the series `key`, created if need be, its metric names and newest time kept
/// up to date with `datum` at `t`.
fn series_id(
    tx: &Connection,
    known: &mut HashMap<Key, Known>,
    key: Key,
    datum: &Datum,
    t: i64,
) -> Result<i64, String> {
    if !known.contains_key(&key) {
        let found: Option<(i64, String, i64)> = tx
            .query_row(
                "SELECT id, metrics, last FROM metric_series WHERE namespace = ?1 AND dimensions = ?2",
                params![key.0, key.1],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(failed)?;
        let entry = match found {
            Some((id, metrics, last)) => Known {
                id,
                metrics: serde_json::from_str(&metrics).unwrap_or_default(),
                last,
            },
            None => {
                tx.execute(
                    "INSERT INTO metric_series (namespace, dimensions, metrics, last) \
                     VALUES (?1, ?2, '[]', ?3)",
                    params![key.0, key.1, t],
                )
                .map_err(failed)?;
                Known {
                    id: tx.last_insert_rowid(),
                    metrics: BTreeSet::new(),
                    last: t,
                }
            }
        };
        known.insert(key.clone(), entry);
    }
    let entry = known.get_mut(&key).expect("inserted above");
    let new_names = datum.keys().any(|m| !entry.metrics.contains(m));
    if new_names || t > entry.last {
        entry.metrics.extend(datum.keys().cloned());
        entry.last = entry.last.max(t);
        let names = serde_json::to_string(&entry.metrics).unwrap_or_default();
        tx.execute(
            "UPDATE metric_series SET metrics = ?2, last = ?3 WHERE id = ?1",
            params![entry.id, names, entry.last],
        )
        .map_err(failed)?;
    }
    Ok(entry.id)
}

/// Merge `datum` into the row of `series`, `resolution`, `t` (created if absent).
fn merge_row(
    tx: &Connection,
    series: i64,
    resolution: u64,
    t: i64,
    datum: &Datum,
) -> Result<(), String> {
    let existing: Option<Vec<u8>> = tx
        .prepare_cached(
            "SELECT datum FROM metric_points WHERE series = ?1 AND resolution = ?2 AND t = ?3",
        )
        .map_err(failed)?
        .query_row(params![series, resolution as i64, t], |r| r.get(0))
        .optional()
        .map_err(failed)?;
    let bytes = match existing.map(|b| decode(&b)) {
        Some(Ok(mut mine)) => {
            merge_datum(&mut mine, datum);
            encode(&mine)
        }
        // A datapoint that cannot be read is replaced.
        Some(Err(_)) | None => encode(datum),
    };
    tx.prepare_cached(
        "INSERT INTO metric_points (series, resolution, t, datum) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (series, resolution, t) DO UPDATE SET datum = ?4",
    )
    .map_err(failed)?
    .execute(params![series, resolution as i64, t, bytes])
    .map_err(failed)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use plinth_policy::metric_alarm::Statistic;
    use plinth_policy::metric_data::{parse_retention, Aggregate, DEFAULT_RETENTION};

    fn point(variant: &str, t: i64, invocations: u64) -> Point {
        let mut datum = Datum::new();
        datum.insert("Invocations".into(), Aggregate::repeated(1.0, invocations));
        Point {
            namespace: "AWS/SageMaker".into(),
            dimensions: vec![
                ("VariantName".into(), variant.into()),
                ("EndpointName".into(), "e".into()),
            ],
            t,
            datum,
        }
    }

    fn sum(store: &MetricStore, resolution: u64, from: i64, to: i64) -> Vec<(i64, f64)> {
        let id = store
            .find(
                "AWS/SageMaker",
                &[
                    ("EndpointName".into(), "e".into()),
                    ("VariantName".into(), "a".into()),
                ],
            )
            .unwrap()
            .unwrap();
        store
            .points(id, resolution, from, to, "Invocations")
            .unwrap()
            .into_iter()
            .map(|(t, a)| (t, a.value(Statistic::Sum).unwrap()))
            .collect()
    }

    #[test]
    fn each_resolution_holds_the_merge_of_the_finest_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let tiers = parse_retention(DEFAULT_RETENTION).unwrap();
        let base = 1_700_000_000 - 1_700_000_000 % 3600;
        {
            let store = MetricStore::open(dir.path(), tiers.clone()).unwrap();
            // Two hours of one request a second, and a second written twice.
            let points: Vec<Point> = (0..7200).map(|s| point("a", base + s, 1)).collect();
            store.record(&points).unwrap();
            store.record(&[point("a", base + 5, 2)]).unwrap();
            assert_eq!(store.roll_up(base + 3599).unwrap(), 3600);
            // Nothing is merged twice.
            assert_eq!(store.roll_up(base + 3599).unwrap(), 0);
            // A late point before the mark is merged straight away.
            store.record(&[point("a", base + 10, 3)]).unwrap();
            store.roll_up(base + 7199).unwrap();
        }
        let store = MetricStore::open(dir.path(), tiers).unwrap();
        assert_eq!(sum(&store, 1, base + 5, base + 6), vec![(base + 5, 3.0)]);
        assert_eq!(sum(&store, 1, base + 10, base + 11), vec![(base + 10, 4.0)]);
        let minutes = sum(&store, 60, base, base + 7200);
        assert_eq!(minutes.len(), 120);
        assert_eq!(minutes[0], (base, 65.0));
        assert_eq!(minutes[1], (base + 60, 60.0));
        let hours = sum(&store, 3600, base, base + 7200);
        assert_eq!(hours, vec![(base, 3605.0), (base + 3600, 3600.0)]);
        assert_eq!(sum(&store, 300, base, base + 7200).len(), 24);
        let series = store.series().unwrap();
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].metrics, vec!["Invocations".to_string()]);
        assert_eq!(
            series[0].dimensions,
            vec![
                ("EndpointName".to_string(), "e".to_string()),
                ("VariantName".to_string(), "a".to_string())
            ]
        );
        assert_eq!(series[0].last, base + 7199);
    }

    #[test]
    fn each_resolution_is_kept_for_its_retention() {
        let tiers = parse_retention("1s:1h,1m:1d,1h:30d").unwrap();
        let store = MetricStore::in_memory(tiers).unwrap();
        let base = 1_700_000_000 - 1_700_000_000 % 3600;
        let points: Vec<Point> = (0..600).map(|s| point("a", base + s, 1)).collect();
        store.record(&points).unwrap();
        store.roll_up(base + 299).unwrap();
        assert_eq!(
            (store.rows(1), store.rows(60), store.rows(3600)),
            (600, 5, 1)
        );
        // Long after, only the merged seconds go: those after the merge mark stay.
        store.expire(base + 3600 + 700).unwrap();
        assert_eq!(store.rows(1), 300, "the seconds after the merge mark stay");
        store.roll_up(base + 599).unwrap();
        // An hour and five minutes after the start the first five minutes are gone.
        store.expire(base + 3600 + 300).unwrap();
        assert_eq!(
            (store.rows(1), store.rows(60), store.rows(3600)),
            (300, 10, 1)
        );
        store.expire(base + 86_400 + 300).unwrap();
        assert_eq!((store.rows(1), store.rows(60), store.rows(3600)), (0, 5, 1));
        store.expire(base + 31 * 86_400).unwrap();
        assert_eq!((store.rows(1), store.rows(60), store.rows(3600)), (0, 0, 0));
        assert!(
            store.series().unwrap().is_empty(),
            "the series went with its data"
        );
    }

    #[test]
    fn a_resolution_no_longer_kept_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let base = 1_700_000_000 - 1_700_000_000 % 3600;
        {
            let tiers = parse_retention("1s:1h,1m:1d").unwrap();
            let store = MetricStore::open(dir.path(), tiers).unwrap();
            store.record(&[point("a", base, 1)]).unwrap();
            store.roll_up(base).unwrap();
            assert_eq!(store.rows(60), 1);
        }
        let store = MetricStore::open(dir.path(), parse_retention("1s:1h,5m:2d").unwrap()).unwrap();
        store.expire(base + 10).unwrap();
        assert_eq!((store.rows(1), store.rows(60)), (1, 0));
    }
}
