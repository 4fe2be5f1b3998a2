//! The background tasks that change endpoints (create, restore, update, capacity change,
//! deployment): which one is changing which endpoint, so that DeleteEndpoint can cancel it,
//! and [`spawn_guarded`], the one guard every such task runs under.
//!
//! At most one task changes an endpoint at a time (a change is refused while another is in
//! progress), so the registry keeps one [`Ticket`] per endpoint. Cancelling sets the
//! ticket's flag and aborts the task: the flag is what a task checks, under
//! `Fleet::changes`, before it commits (`background.rs` `Job::commit`), so that a task that
//! finished building just as the endpoint was deleted never brings it back; the abort stops
//! the task at its next `.await` and drops what it built.
//!
//! The guard: the work runs on a task of its own, and a second task awaits its `JoinHandle`.
//! A panic ([`tokio::task::JoinError::is_panic`]) hands the panic's message to the caller's
//! recovery, which settles the endpoint (`Failed`, or back `InService` on what still
//! serves); a cancelled task needs none (it was deleted).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::task::AbortHandle;

/// The background tasks changing endpoints, by endpoint name.
#[derive(Default)]
pub(crate) struct Tasks {
    running: Mutex<HashMap<String, Running>>,
    next: AtomicU64,
}

/// One registered task.
struct Running {
    ticket: Ticket,
    /// Set once the task is spawned.
    abort: Option<AbortHandle>,
}

/// A background task's claim on one endpoint: cancelled when the endpoint is deleted.
#[derive(Clone)]
pub(crate) struct Ticket {
    endpoint: String,
    id: u64,
    cancelled: Arc<AtomicBool>,
}

impl Ticket {
    /// The endpoint the task changes.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The endpoint was deleted: the task must commit and publish nothing more.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
}

impl Tasks {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register a new task changing `endpoint`, in place of one that has finished its
    /// work (one change at a time: the previous task committed its last state already).
    pub(crate) fn claim(&self, endpoint: &str) -> Ticket {
        let ticket = Ticket {
            endpoint: endpoint.to_string(),
            id: self.next.fetch_add(1, Ordering::Relaxed),
            cancelled: Arc::default(),
        };
        self.running().insert(
            endpoint.to_string(),
            Running {
                ticket: ticket.clone(),
                abort: None,
            },
        );
        ticket
    }

    /// Cancel the task changing `endpoint`, if one is: its ticket is flagged and the task
    /// aborted. Call it holding `Fleet::changes`, before taking the endpoint away, so that a
    /// task about to commit sees the flag. Whether a task was running.
    pub(crate) fn cancel(&self, endpoint: &str) -> bool {
        let Some(running) = self.running().remove(endpoint) else {
            return false;
        };
        running.ticket.cancelled.store(true, Ordering::SeqCst);
        if let Some(abort) = running.abort {
            abort.abort();
        }
        true
    }

    /// The task of `ticket` was spawned: keep its abort handle (aborting at once if it was
    /// cancelled in between).
    fn attach(&self, ticket: &Ticket, abort: AbortHandle) {
        if ticket.is_cancelled() {
            abort.abort();
            return;
        }
        if let Some(running) = self.running().get_mut(&ticket.endpoint) {
            if running.ticket.id == ticket.id {
                running.abort = Some(abort);
            }
        }
    }

    /// The task of `ticket` is over: forget it (unless a newer task took its place).
    fn release(&self, ticket: &Ticket) {
        let mut running = self.running();
        if running
            .get(&ticket.endpoint)
            .is_some_and(|r| r.ticket.id == ticket.id)
        {
            running.remove(&ticket.endpoint);
        }
    }

    /// Whether a task is registered for `endpoint`.
    #[cfg(test)]
    pub(crate) fn is_running(&self, endpoint: &str) -> bool {
        self.running().contains_key(endpoint)
    }
}

/// Run `work` on a task of its own, registered under `ticket` (so that
/// [`Tasks::cancel`] can abort it), and return at once. If `work` panics, `recover` runs
/// with the panic's message; if it is cancelled, nothing more happens.
pub(crate) fn spawn_guarded<W, R, F>(tasks: &Arc<Tasks>, ticket: Ticket, work: W, recover: R)
where
    W: Future<Output = ()> + Send + 'static,
    R: FnOnce(String) -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let handle = tokio::spawn(work);
    tasks.attach(&ticket, handle.abort_handle());
    let tasks = tasks.clone();
    tokio::spawn(async move {
        match handle.await {
            Ok(()) => {}
            Err(e) if e.is_panic() => {
                let message = panic_message(e.into_panic());
                tracing::error!(endpoint = %ticket.endpoint, %message, "a background task on the endpoint panicked");
                recover(message).await;
            }
            Err(_) => {
                tracing::info!(endpoint = %ticket.endpoint, "background task cancelled: the endpoint was deleted");
            }
        }
        tasks.release(&ticket);
    });
}

/// The text of a panic's payload (`panic!`'s message), or a stand-in.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(text) => (*text).to_string(),
            Err(_) => "a panic without a message".to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::oneshot;

    /// A recovery that reports the message it got.
    fn reporting(
        tx: oneshot::Sender<String>,
    ) -> impl FnOnce(String) -> std::future::Ready<()> + Send + 'static {
        move |message| {
            let _ = tx.send(message);
            std::future::ready(())
        }
    }

    async fn released(tasks: &Tasks, endpoint: &str) {
        for _ in 0..500 {
            if !tasks.is_running(endpoint) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("the task on {endpoint} was never released");
    }

    #[tokio::test]
    async fn a_panic_reaches_the_recovery_with_its_message() {
        let tasks = Arc::new(Tasks::default());
        let (tx, rx) = oneshot::channel();
        let ticket = tasks.claim("e");
        let n = 7;
        spawn_guarded(
            &tasks,
            ticket,
            async move { panic!("boom {n}") },
            reporting(tx),
        );
        assert_eq!(rx.await.unwrap(), "boom 7");
        released(&tasks, "e").await;

        let (tx, rx) = oneshot::channel();
        spawn_guarded(
            &tasks,
            tasks.claim("f"),
            async { std::panic::panic_any(42u8) },
            reporting(tx),
        );
        assert_eq!(rx.await.unwrap(), "a panic without a message");
    }

    #[tokio::test]
    async fn work_that_ends_or_is_cancelled_needs_no_recovery() {
        let tasks = Arc::new(Tasks::default());
        let (tx, rx) = oneshot::channel();
        spawn_guarded(&tasks, tasks.claim("done"), async {}, reporting(tx));
        released(&tasks, "done").await;
        assert!(rx.await.is_err(), "the recovery ran for work that ended");

        // Cancelled while it waits: aborted, its state dropped, no recovery.
        let (tx, rx) = oneshot::channel();
        let (dropped_tx, dropped_rx) = oneshot::channel::<()>();
        let ticket = tasks.claim("slow");
        let seen = ticket.clone();
        spawn_guarded(
            &tasks,
            ticket,
            async move {
                let _held = dropped_tx;
                std::future::pending::<()>().await;
            },
            reporting(tx),
        );
        assert!(tasks.cancel("slow"));
        assert!(seen.is_cancelled());
        assert!(dropped_rx.await.is_err(), "what the task held was dropped");
        assert!(rx.await.is_err(), "the recovery ran for a cancelled task");
        assert!(!tasks.cancel("slow"), "cancelled twice");
    }

    #[tokio::test]
    async fn a_finished_task_does_not_release_its_successor() {
        let tasks = Arc::new(Tasks::default());
        let (go, wait) = oneshot::channel::<()>();
        spawn_guarded(
            &tasks,
            tasks.claim("e"),
            async move {
                let _ = wait.await;
            },
            |_| std::future::ready(()),
        );
        // The next change claims the endpoint before the first task's guard has finished.
        let second = tasks.claim("e");
        go.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(tasks.is_running("e"));
        assert!(tasks.cancel("e"));
        assert!(second.is_cancelled());
    }
}
