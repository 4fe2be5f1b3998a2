//! Test-only injection points in the background tasks that change endpoints (compiled
//! under `cfg(test)` only: a server that is not a unit test has none). A test names an
//! endpoint, and the next background task on it (a `background.rs` `Job`):
//!
//! - [`Hook::Panic`]: panics as it starts, with the given message (the guard's tests);
//! - [`hold`]: stops before its next commit or publish, hands the test the pools of the state
//!   it was about to commit (as `Weak`s, to check that they are dropped), and waits until
//!   the test lets it go (DeleteEndpoint's tests place the delete there).
//!
//! Each hook fires once. Unit tests run in parallel in one process: each test uses endpoint
//! names of its own.

use super::table::EndpointSnapshot;
use plinth_runtime::VariantPool;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use tokio::sync::oneshot;

/// What the next background task on an endpoint meets.
pub(crate) enum Hook {
    /// It panics as it starts, with this message.
    Panic(String),
    /// It stops before its next commit: see [`hold`].
    Hold {
        reached: oneshot::Sender<Vec<Weak<VariantPool>>>,
        resume: oneshot::Receiver<()>,
    },
}

static HOOKS: LazyLock<Mutex<HashMap<String, Hook>>> = LazyLock::new(Default::default);

fn hooks() -> std::sync::MutexGuard<'static, HashMap<String, Hook>> {
    HOOKS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Set the hook the next background task on `endpoint` meets.
pub(crate) fn set(endpoint: &str, hook: Hook) {
    hooks().insert(endpoint.to_string(), hook);
}

/// Hold the next commit of a background task on `endpoint`: the receiver gets the pools of
/// the state it reached; sending on the sender lets it go on (dropping the sender too).
pub(crate) fn hold(
    endpoint: &str,
) -> (
    oneshot::Receiver<Vec<Weak<VariantPool>>>,
    oneshot::Sender<()>,
) {
    let (reached, reached_rx) = oneshot::channel();
    let (resume_tx, resume) = oneshot::channel();
    set(endpoint, Hook::Hold { reached, resume });
    (reached_rx, resume_tx)
}

/// A background task on `endpoint` starts.
pub(super) fn at_start(endpoint: &str) {
    let mut hooks = hooks();
    if let Some(Hook::Panic(_)) = hooks.get(endpoint) {
        let Some(Hook::Panic(message)) = hooks.remove(endpoint) else {
            unreachable!()
        };
        drop(hooks);
        panic!("{message}");
    }
}

/// A background task is about to commit or publish `snapshot`.
pub(super) async fn before_commit(snapshot: &EndpointSnapshot) {
    let hook = {
        let mut hooks = hooks();
        match hooks.get(&snapshot.name) {
            Some(Hook::Hold { .. }) => hooks.remove(&snapshot.name),
            _ => None,
        }
    };
    let Some(Hook::Hold { reached, resume }) = hook else {
        return;
    };
    let pools = snapshot
        .variants
        .iter()
        .chain(snapshot.new_fleet.iter().flat_map(|n| n.variants.iter()))
        .filter_map(|v| v.live.serving.single().map(Arc::downgrade))
        .collect();
    let _ = reached.send(pools);
    let _ = resume.await;
}
