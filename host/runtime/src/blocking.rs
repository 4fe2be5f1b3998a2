//! The bounded pool that runs backend work (wasi-nn `load` and `compute`) off the async
//! workers: a model that computes for seconds occupies a pool thread, never a worker, so
//! HTTP, the control plane and the other variants keep running. At most one job per core
//! runs at once; more wait for a free thread. A job whose caller stopped waiting (its
//! deadline passed, its instance was abandoned) still runs to its end and holds its thread
//! until then: backend code cannot be interrupted, so the bound is what keeps it in check.

use std::sync::Arc;
use tokio::sync::Semaphore;

/// Threads for backend work, one per core by default.
#[derive(Debug, Clone)]
pub(crate) struct BackendPool {
    permits: Arc<Semaphore>,
    threads: usize,
    /// Whose jobs these are: their CPU time is counted there.
    usage: Option<Arc<crate::usage::Usage>>,
}

impl BackendPool {
    /// A pool running at most `threads` jobs at once (at least 1).
    pub(crate) fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        Self {
            permits: Arc::new(Semaphore::new(threads)),
            threads,
            usage: None,
        }
    }

    /// The same pool, the CPU time of the jobs run through this handle counted in `usage`.
    pub(crate) fn counted_in(&self, usage: Arc<crate::usage::Usage>) -> Self {
        Self {
            usage: Some(usage),
            ..self.clone()
        }
    }

    /// One job per core of this machine.
    pub(crate) fn per_core() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// The most jobs that run at once.
    pub(crate) fn threads(&self) -> usize {
        self.threads
    }

    /// Run `job` on a pool thread once one is free, and wait for its result. A panic in the
    /// job comes back as an error.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| "the backend pool is closed".to_string())?;
        let usage = self.usage.clone();
        tokio::task::spawn_blocking(move || {
            let _held_until_done = permit;
            match usage {
                Some(usage) => usage.run(job),
                None => job(),
            }
        })
        .await
        .map_err(|e| match e.try_into_panic() {
            Ok(panic) => format!(
                "the backend panicked: {}",
                panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default()
            ),
            Err(_) => "the backend job was cancelled".to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// No more jobs run at once than the pool has threads, the async workers stay free while
    /// jobs block, and a panicking job is an error, not a crash.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn runs_at_most_its_threads_off_the_workers() {
        let pool = BackendPool::new(2);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let jobs: Vec<_> = (0..6)
            .map(|_| {
                let (pool, running, most) = (pool.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    pool.run(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(50));
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
                })
            })
            .collect();
        // The one worker is free while the jobs block.
        let ticked = tokio::time::timeout(Duration::from_millis(40), async {
            tokio::time::sleep(Duration::from_millis(5)).await;
        })
        .await;
        assert!(ticked.is_ok(), "the async worker was blocked");
        for job in jobs {
            job.await.unwrap().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
        let panicked = pool.run(|| panic!("boom")).await.unwrap_err();
        assert!(panicked.contains("boom"), "{panicked}");
    }
}
