//! Group commit for the asynchronous queue: the jobs InvokeEndpointAsync accepts, the starts
//! and ends the queue runner records, the notifications' tries, come from many tasks at
//! once. One writer thread takes every write waiting, appends them to the queue's log in one
//! batch (`Queue::write`), and answers each: N writes cost one write and one sync to disk,
//! and no file work for them runs on the async workers. A write is answered only once it is
//! in the log, so a 202 means the job is stored.
//!
//! A job's end may come with a small local object kept in its record (`Queue::write` puts
//! it in place once the record is written), or with a larger one written for it (its output
//! or failure object), staged beside its place and not yet synced. Those ends are committed in a second step of
//! the batch, after the writes that need no file (an accept never waits for a sync): the
//! staged files' data is synced (`syncfs`, once per file system; a file system that cannot
//! be synced has its files synced one by one), then each is renamed into place, the names
//! are synced the same way, and only then are the ends committed. So a reader never sees
//! part of an object, and a job is never recorded done while its object could still be lost
//! or be found empty after a power failure; an end whose object cannot be made durable is
//! answered with an error (its job runs again).

use super::queue::{make_durable, Queue, QueueWrite};
use super::store::StoreError;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// How often the objects put in place are looked at for a checkpoint.
const CHECKPOINT_LOOK: Duration = Duration::from_millis(250);

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
    /// Start the writer thread over `queue`.
    pub(crate) fn start(queue: Arc<Queue>) -> std::io::Result<Self> {
        let (writes, pending) = mpsc::channel::<Pending>();
        // The objects the writer put in place, checkpointed a second later, off the writer
        // (a sync of a second's objects takes a while); ends when the queue is dropped.
        let weak = Arc::downgrade(&queue);
        std::thread::Builder::new()
            .name("plinth-queue-sync".into())
            .spawn(move || {
                while let Some(queue) = weak.upgrade() {
                    queue.checkpoint_if_due(false);
                    drop(queue);
                    std::thread::sleep(CHECKPOINT_LOOK);
                }
            })?;
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
                        commit_batch(&queue, batch)
                    }));
                    if done.is_err() {
                        tracing::error!("the asynchronous queue's writer panicked on a batch; its writes failed");
                    }
                    queue.rewrite_if_due();
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
fn commit_batch(queue: &Queue, batch: Vec<Pending>) {
    let (plain, placed): (Vec<Pending>, Vec<Pending>) = batch
        .into_iter()
        .partition(|(_, placed, _)| placed.is_none());
    commit(queue, plain);
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
    commit(queue, kept);
}

/// Append `writes` in one batch and answer each.
fn commit(queue: &Queue, writes: Vec<Pending>) {
    if writes.is_empty() {
        return;
    }
    let (writes, replies): (Vec<QueueWrite>, Vec<Reply>) =
        writes.into_iter().map(|(w, _, r)| (w, r)).unzip();
    let (results, placing) = queue.write_unplaced(&writes);
    // Every write but the ends with an object to put in place is answered at once: an
    // accept does not wait for the renames.
    let mut after = Vec::new();
    for ((write, reply), result) in writes.iter().zip(replies).zip(results) {
        if matches!(
            write,
            QueueWrite::Finish {
                object: Some(_),
                ..
            }
        ) {
            after.push((reply, result));
        } else {
            let _ = reply.send(result);
        }
    }
    queue.place(&writes, placing);
    for (reply, result) in after {
        let _ = reply.send(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A queue with its log in `dir`.
    fn queue(dir: &Path) -> Arc<Queue> {
        Arc::new(Queue::open(&dir.join("q.log")).unwrap())
    }

    #[tokio::test]
    async fn concurrent_writes_are_each_answered_once_committed() {
        let dir = tempfile::tempdir().unwrap();
        let queue = queue(dir.path());
        let writer = Arc::new(GroupCommit::start(queue.clone()).unwrap());
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let writer = writer.clone();
                tokio::spawn(async move {
                    writer
                        .write(
                            QueueWrite::Insert {
                                endpoint: "e".into(),
                                id: format!("j{i}"),
                                accepted: f64::from(i),
                                job: json!({}),
                            },
                            None,
                        )
                        .await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let (queued, _) = queue.backlog("e", 0.0);
        assert_eq!(queued, 200, "every write committed");
        drop(writer);
        assert_eq!(
            Queue::open(&dir.path().join("q.log"))
                .unwrap()
                .backlog("e", 0.0)
                .0,
            200,
            "and in the log"
        );
    }

    #[tokio::test]
    async fn an_end_is_committed_once_its_object_is_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let queue = queue(dir.path());
        let writer = GroupCommit::start(queue.clone()).unwrap();
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
        let seq = queue.claim("e", 1)[0].seq;
        let end = |path: &Path| QueueWrite::Finish {
            seq,
            outcome: json!({ "Status": "Completed", "OutputLocation": path }),
            notification: None,
            object: None,
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
        assert_eq!(queue.status("e", 1.0).running, 1);
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
        let status = queue.status("e", 1.0);
        assert_eq!((status.running, status.completed), (0, 1));
    }
}
