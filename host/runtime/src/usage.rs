//! What a pool's instances use, for CloudWatch's `CPUUtilization` and `MemoryUtilization`:
//! the time their guest calls spend running on whatever thread polls them, and their
//! backend jobs on the backend pool's threads (the monotonic clock read around each poll
//! and each job: a thread's own CPU clock costs a system call per read, which measured 15 %
//! of the serving throughput; a thread preempted in the middle of a poll counts that time
//! too), and the bytes they hold against their memory limits, as of each one's last call.
//! Time is measured only while [`account_cpu`] is on (the server turns it on when it stores
//! metrics): two clock reads per poll are the whole cost.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Whether CPU time is measured, process-wide.
static ACCOUNTING: AtomicBool = AtomicBool::new(false);

/// Measure guest and backend CPU time from now on (or stop).
pub fn account_cpu(on: bool) {
    ACCOUNTING.store(on, Ordering::Relaxed);
}

fn accounting() -> bool {
    ACCOUNTING.load(Ordering::Relaxed)
}

/// Nanoseconds on the monotonic clock since a process-wide origin.
fn clock_nanos() -> u64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(std::time::Instant::now);
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// One pool's usage.
#[derive(Debug, Default)]
pub(crate) struct Usage {
    cpu_nanos: AtomicU64,
    memory_bytes: AtomicUsize,
}

impl Usage {
    /// CPU time its calls and jobs have taken, in nanoseconds, since the pool was built.
    pub(crate) fn cpu_nanos(&self) -> u64 {
        self.cpu_nanos.load(Ordering::Relaxed)
    }

    /// The bytes its instances hold now (as of each one's last call).
    pub(crate) fn memory_bytes(&self) -> usize {
        self.memory_bytes.load(Ordering::Relaxed)
    }

    /// An instance's bytes moved from `before` to `now`.
    pub(crate) fn memory_moved(&self, before: usize, now: usize) {
        if now >= before {
            self.memory_bytes.fetch_add(now - before, Ordering::Relaxed);
        } else {
            self.memory_bytes.fetch_sub(before - now, Ordering::Relaxed);
        }
    }

    /// Run `job` (on this thread), its time counted.
    pub(crate) fn run<T>(&self, job: impl FnOnce() -> T) -> T {
        if !accounting() {
            return job();
        }
        let started = clock_nanos();
        let result = job();
        self.cpu_nanos
            .fetch_add(clock_nanos().saturating_sub(started), Ordering::Relaxed);
        result
    }

    /// Await `call`, the time of each of its polls counted.
    pub(crate) async fn timed<F: Future>(&self, call: F) -> F::Output {
        if !accounting() {
            return call.await;
        }
        let mut call = std::pin::pin!(call);
        std::future::poll_fn(|cx| self.run(|| call.as_mut().poll(cx))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn polls_and_jobs_count_their_cpu_time() {
        let usage = Usage::default();
        // Busy for `ms`.
        let spin = |ms: u64| {
            let until = clock_nanos() + ms * 1_000_000;
            let mut x = 0u64;
            while clock_nanos() < until {
                x = x.wrapping_add(1);
            }
            x
        };
        account_cpu(false);
        usage.run(|| spin(20));
        assert_eq!(usage.cpu_nanos(), 0, "not counted while off");
        account_cpu(true);
        usage.run(|| spin(20));
        usage.timed(async { spin(20) }).await;
        // Sleeping is not CPU time.
        usage
            .timed(tokio::time::sleep(std::time::Duration::from_millis(50)))
            .await;
        let ms = usage.cpu_nanos() as f64 / 1e6;
        assert!((40.0..200.0).contains(&ms), "{ms} ms");
        usage.memory_moved(0, 1000);
        usage.memory_moved(1000, 400);
        assert_eq!(usage.memory_bytes(), 400);
    }
}
