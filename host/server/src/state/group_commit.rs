//! Group commit for the asynchronous queue: the jobs InvokeEndpointAsync accepts, the starts
//! and ends the queue runner records, come from many tasks at once. One writer thread takes
//! every write waiting, commits them in one transaction (`Store::write_queue`), and answers
//! each: N writes cost one commit and one sync to disk, and no SQLite work runs on the async
//! workers. A write is answered only once it is committed, so a 202 still means the job is
//! stored.
//!
//! A job's end may come with a local object written for it (its output or failure object),
//! staged beside its place and not yet synced. Those ends are committed in a second step of
//! the batch, after the writes that need no file (an accept never waits for a sync): the
//! staged files' data is synced (`syncfs`, once per file system; a file system that cannot
//! be synced has its files synced one by one), then each is renamed into place, the names
//! are synced the same way, and only then are the ends committed. So a reader never sees
//! part of an object, and a job is never recorded done while its object could still be lost
//! or be found empty after a power failure; an end whose object cannot be made durable is
//! answered with an error (its job runs again).

use super::store::{QueueWrite, StoreError};
use super::Stored;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

/// The most writes one batch takes.
const MAX_BATCH: usize = 512;

type Reply = tokio::sync::oneshot::Sender<Result<(), StoreError>>;

/// A local object written for a job: its data at `staged`, to be renamed to `path` (the
/// same path when it is in place already and only has to be made durable).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Placed {
    pub(crate) staged: PathBuf,
    pub(crate) path: PathBuf,
}

/// A write, the local object to put in place before it (if any), and where its result goes.
type Pending = (QueueWrite, Option<Placed>, Reply);

/// The handle to the writer thread; the thread ends when the handle is dropped.
pub(crate) struct GroupCommit {
    writes: mpsc::Sender<Pending>,
}

impl GroupCommit {
    /// Start the writer thread over `stored`'s store.
    pub(crate) fn start(stored: Arc<Stored>) -> std::io::Result<Self> {
        let (writes, pending) = mpsc::channel::<Pending>();
        std::thread::Builder::new()
            .name("plinth-queue-writer".into())
            .spawn(move || {
                while let Ok(first) = pending.recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match pending.try_recv() {
                            Ok(write) => batch.push(write),
                            Err(_) => break,
                        }
                    }
                    // A panic fails this batch's writes (their callers are told the writer
                    // stopped) and not the thread.
                    let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        commit_batch(&stored, batch)
                    }));
                    if done.is_err() {
                        tracing::error!("the asynchronous queue's writer panicked on a batch; its writes failed");
                    }
                }
            })?;
        Ok(Self { writes })
    }

    /// Commit `write` with whatever else is waiting, `placed` (a local object written for
    /// it) put in place and made durable first; its result once committed.
    pub(crate) async fn write(
        &self,
        write: QueueWrite,
        placed: Option<Placed>,
    ) -> Result<(), StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let gone = || StoreError::Failed("the queue's writer has stopped".into());
        self.writes
            .send((write, placed, reply))
            .map_err(|_| gone())?;
        answer.await.unwrap_or_else(|_| Err(gone()))
    }
}

/// Commit one batch: first the writes that need no file, then the ends whose objects were
/// put in place and made durable.
fn commit_batch(stored: &Stored, batch: Vec<Pending>) {
    let (plain, placed): (Vec<Pending>, Vec<Pending>) = batch
        .into_iter()
        .partition(|(_, placed, _)| placed.is_none());
    commit(stored, plain);
    if placed.is_empty() {
        return;
    }
    let staged: Vec<&Path> = placed
        .iter()
        .filter_map(|(_, p, _)| p.as_ref().map(|p| p.staged.as_path()))
        .collect();
    let data = make_durable(&staged);
    let mut ready: Vec<Pending> = Vec::with_capacity(placed.len());
    let mut named = Vec::with_capacity(placed.len());
    for ((write, p, reply), synced) in placed.into_iter().zip(data) {
        let p = p.expect("partitioned: each has its object");
        let put = synced.and_then(|()| {
            if p.staged == p.path {
                Ok(())
            } else {
                std::fs::rename(&p.staged, &p.path)
            }
        });
        match put {
            Ok(()) => {
                named.push(p.path);
                ready.push((write, None, reply));
            }
            Err(e) => {
                if p.staged != p.path {
                    let _ = std::fs::remove_file(&p.staged);
                }
                let _ = reply.send(Err(StoreError::Failed(format!(
                    "{} could not be made durable: {e}",
                    p.path.display()
                ))));
            }
        }
    }
    // The names, now that they point at durable data.
    let names: Vec<&Path> = named.iter().map(PathBuf::as_path).collect();
    let mut kept: Vec<Pending> = Vec::with_capacity(ready.len());
    for ((write, _, reply), synced) in ready.into_iter().zip(make_durable(&names)) {
        match synced {
            Ok(()) => kept.push((write, None, reply)),
            Err(e) => {
                let _ = reply.send(Err(StoreError::Failed(format!(
                    "the object's name could not be made durable: {e}"
                ))));
            }
        }
    }
    commit(stored, kept);
}

/// Commit `writes` in one transaction and answer each.
fn commit(stored: &Stored, writes: Vec<Pending>) {
    if writes.is_empty() {
        return;
    }
    let (writes, replies): (Vec<QueueWrite>, Vec<Reply>) =
        writes.into_iter().map(|(w, _, r)| (w, r)).unzip();
    let results = stored.store.write_queue(&writes);
    for (reply, result) in replies.into_iter().zip(results) {
        let _ = reply.send(result);
    }
}

/// Make each of `files` durable (its data and its name): its file system synced, once per
/// file system; the files of a file system that cannot be synced are synced one by one
/// (with their directories). Each file's result, in order.
fn make_durable(files: &[&Path]) -> Vec<std::io::Result<()>> {
    use std::os::unix::fs::MetadataExt;
    // Per directory, its file system's device; per device, whether it was synced.
    let mut devices: HashMap<PathBuf, std::io::Result<u64>> = HashMap::new();
    let mut synced: HashMap<u64, bool> = HashMap::new();
    files
        .iter()
        .map(|file| {
            let dir = file.parent().unwrap_or(Path::new("/")).to_path_buf();
            let device = devices
                .entry(dir.clone())
                .or_insert_with(|| std::fs::metadata(&dir).map(|m| m.dev()));
            let device = match device {
                Ok(device) => *device,
                Err(e) => return Err(std::io::Error::new(e.kind(), e.to_string())),
            };
            let whole = *synced.entry(device).or_insert_with(|| {
                let done = std::fs::File::open(&dir).and_then(|d| Ok(rustix::fs::syncfs(&d)?));
                if let Err(e) = &done {
                    tracing::warn!(dir = %dir.display(), error = %e, "a file system could not be synced; its files are synced one by one");
                }
                done.is_ok()
            });
            if whole {
                return Ok(());
            }
            std::fs::File::open(file)?.sync_all()?;
            std::fs::File::open(&dir)?.sync_all()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A store in memory, with nothing running over it.
    fn stored(artifacts: &Path) -> Arc<Stored> {
        Arc::new(Stored::new(
            super::super::store::Store::in_memory().unwrap(),
            super::super::catalog::Catalog::default(),
            super::super::scaling::Scaling::default(),
            artifacts.to_path_buf(),
            super::super::artifacts::Roots::anywhere(),
            Arc::new(plinth_storage::Storage::new(
                plinth_storage::S3Settings::default(),
            )),
        ))
    }

    #[tokio::test]
    async fn concurrent_writes_are_each_answered_once_committed() {
        let artifacts = tempfile::tempdir().unwrap();
        let stored = stored(artifacts.path());
        let writer = Arc::new(GroupCommit::start(stored.clone()).unwrap());
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let writer = writer.clone();
                tokio::spawn(async move {
                    writer
                        .write(
                            QueueWrite::Insert {
                                endpoint: "e".into(),
                                id: format!("j{}", i % 150),
                                accepted: f64::from(i),
                                job: json!({}),
                            },
                            None,
                        )
                        .await
                })
            })
            .collect();
        let mut exists = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(()) => {}
                Err(StoreError::Exists(_)) => exists += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(exists, 50, "ids given twice, refused once each");
        let (queued, _) = stored.store.backlog("e", 0.0).unwrap();
        assert_eq!(queued, 150, "every other write committed");
    }

    #[tokio::test]
    async fn an_end_is_committed_once_its_object_is_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let stored = stored(dir.path());
        let writer = GroupCommit::start(stored.clone()).unwrap();
        writer
            .write(
                QueueWrite::Insert {
                    endpoint: "e".into(),
                    id: "j".into(),
                    accepted: 1.0,
                    job: json!({}),
                },
                None,
            )
            .await
            .unwrap();
        let seq = stored.store.claim_jobs("e", 1).unwrap()[0].seq;
        let end = |path: &Path| QueueWrite::Finish {
            seq,
            outcome: json!({ "Status": "Completed", "OutputLocation": path }),
            notification: None,
        };
        // An object whose staged data is gone cannot be put in place: the end fails, and
        // the job stays running (it runs again).
        let output = dir.path().join("j.out");
        let missing = Placed {
            staged: dir.path().join(".partial-gone"),
            path: output.clone(),
        };
        assert!(writer.write(end(&output), Some(missing)).await.is_err());
        assert!(!output.exists());
        assert_eq!(stored.store.queue_status("e").unwrap().running, 1);
        // Staged data is renamed into place, then the end committed.
        let staged = dir.path().join(".partial-1");
        std::fs::write(&staged, b"answer").unwrap();
        let placed = Placed {
            staged: staged.clone(),
            path: output.clone(),
        };
        writer.write(end(&output), Some(placed)).await.unwrap();
        assert_eq!(std::fs::read(&output).unwrap(), b"answer");
        assert!(!staged.exists());
        let status = stored.store.queue_status("e").unwrap();
        assert_eq!((status.running, status.completed), (0, 1));
    }
}
