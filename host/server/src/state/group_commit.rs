//! Group commit for the asynchronous queue: the jobs InvokeEndpointAsync accepts and the ends
//! the queue runner records come from many tasks at once. One writer thread takes every write
//! waiting, commits them in one transaction (`Store::write_queue`), and answers each: N writes
//! cost one commit and one sync to disk, and no SQLite work runs on the async workers. A
//! write is answered only once it is committed, so a 202 still means the job is stored.
//!
//! A job's end may come with a local file written for it (its output or failure object,
//! renamed into place but not synced): before the batch is committed, the file systems of
//! those files are synced, once each (`syncfs`), so that a job is never recorded done while
//! its object could still be lost to a power failure, and N objects cost one sync.

use super::store::{QueueWrite, StoreError};
use super::Stored;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;

/// The most writes one transaction takes.
const MAX_BATCH: usize = 512;

type Reply = tokio::sync::oneshot::Sender<Result<(), StoreError>>;

/// A write, the local file to make durable before it (if any), and where its result goes.
type Pending = (QueueWrite, Option<PathBuf>, Reply);

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
                    let mut writes = Vec::with_capacity(batch.len());
                    let mut files = Vec::new();
                    let mut replies = Vec::with_capacity(batch.len());
                    for (write, file, reply) in batch {
                        writes.push(write);
                        files.extend(file);
                        replies.push(reply);
                    }
                    // A file system that cannot be synced is logged, and the ends are
                    // recorded all the same: leaving the jobs running would stall them until a
                    // restart, for a loss that only a power failure could bring.
                    if let Err(e) = sync_file_systems(&files) {
                        tracing::error!(error = %e, "asynchronous results could not be synced to disk");
                    }
                    let results = stored.store.write_queue(&writes);
                    for (reply, result) in replies.into_iter().zip(results) {
                        let _ = reply.send(result);
                    }
                }
            })?;
        Ok(Self { writes })
    }

    /// Commit `write` with whatever else is waiting, `file` (a local file written for it)
    /// made durable first; its result once committed.
    pub(crate) async fn write(
        &self,
        write: QueueWrite,
        file: Option<PathBuf>,
    ) -> Result<(), StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let gone = || StoreError::Failed("the queue's writer has stopped".into());
        self.writes.send((write, file, reply)).map_err(|_| gone())?;
        answer.await.unwrap_or_else(|_| Err(gone()))
    }
}

/// Sync the file system of each of `files`, once per file system (looked up once per
/// directory).
fn sync_file_systems(files: &[PathBuf]) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut dirs: Vec<&std::path::Path> = files.iter().filter_map(|f| f.parent()).collect();
    dirs.sort_unstable();
    dirs.dedup();
    let mut synced = Vec::new();
    for dir in dirs {
        let handle = match std::fs::File::open(dir) {
            Ok(handle) => handle,
            // Gone already (a reader removed it): nothing of it to keep.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let device = handle.metadata()?.dev();
        if synced.contains(&device) {
            continue;
        }
        rustix::fs::syncfs(&handle)?;
        synced.push(device);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn concurrent_writes_are_each_answered_once_committed() {
        let (fleet, _artifacts) = crate::serve::in_memory_fleet().await;
        let writer = Arc::new(GroupCommit::start(fleet.stored.clone()).unwrap());
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
        let (queued, _) = fleet.stored.store.backlog("e", 0.0).unwrap();
        assert_eq!(queued, 150, "every other write committed");
    }
}
