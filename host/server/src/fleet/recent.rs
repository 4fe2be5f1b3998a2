//! A variant's recent requests, as alarms read them: the policy's per-second
//! [`Window`] behind a lock (the request path records, the alarm evaluator reads), on a
//! clock of whole seconds since a process-wide monotonic epoch, so every window in the
//! process is aligned (and aligned with the wall clock's seconds, for the metric store).

use plinth_policy::metric_alarm::{Sample, Stats, Window};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;

/// The instant second 0 began: the first time the clock was read, moved back to the start
/// of the wall clock's second, so that this clock's seconds begin with the wall clock's.
static EPOCH: OnceLock<Instant> = OnceLock::new();

fn epoch(at: Instant) -> Instant {
    *EPOCH.get_or_init(|| {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        at.checked_sub(std::time::Duration::from_nanos(u64::from(
            wall.subsec_nanos(),
        )))
        .unwrap_or(at)
    })
}

/// Whole seconds since the process-wide epoch: what windows are recorded in and alarms
/// evaluated at.
pub(crate) fn current_second() -> u64 {
    second_of(Instant::now())
}

/// The second `at` falls in (see [`current_second`]), for a caller that has read the
/// clock already.
pub(crate) fn second_of(at: Instant) -> u64 {
    at.saturating_duration_since(epoch(at)).as_secs()
}

/// One variant's window, shared by its snapshots.
#[derive(Debug, Default)]
pub(crate) struct RecentRequests {
    window: Mutex<Window>,
}

impl RecentRequests {
    /// Record one request in `second`.
    pub(crate) fn record_at(&self, second: u64, sample: &Sample) {
        self.lock().record_at(second, sample);
    }

    /// Everything recorded in seconds `first..=last`.
    pub(crate) fn stats(&self, first: u64, last: u64) -> Stats {
        self.lock().stats(first, last)
    }

    /// The window, locked: hold it only to read (one window at a time).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Window> {
        // A panic while holding the lock leaves at worst one request half counted.
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plinth_policy::metric_alarm::Outcome;
    use std::time::Duration;

    fn sample(outcome: Outcome) -> Sample {
        Sample {
            outcome,
            model_error: false,
            model_latency: Some(Duration::from_millis(1)),
            overhead_latency: Duration::from_micros(50),
        }
    }

    #[test]
    fn concurrent_recording_is_exact() {
        let recent = RecentRequests::default();
        let (threads, per_thread) = (8u64, 5_000u64);
        std::thread::scope(|scope| {
            for t in 0..threads {
                let recent = &recent;
                scope.spawn(move || {
                    for i in 0..per_thread {
                        let outcome = if i % 10 == 0 {
                            Outcome::ServerError
                        } else {
                            Outcome::Success
                        };
                        // Two threads race over each second boundary.
                        recent.record_at(i / 1000 + (t % 2), &sample(outcome));
                    }
                });
            }
        });
        let stats = recent.stats(0, 100);
        assert_eq!(stats.count, threads * per_thread);
        assert_eq!(stats.errors_5xx, threads * per_thread / 10);
        assert_eq!(recent.lock().bucket_count(), 6);
    }
}
