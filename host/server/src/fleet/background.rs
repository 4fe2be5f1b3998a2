//! A background change to one endpoint, as a [`Job`]: the work spawned under the panic
//! guard (`tasks.rs` [`spawn_guarded`]) and registered so that DeleteEndpoint can cancel it,
//! and the only way such work commits or publishes the endpoint.
//!
//! The commit race: DeleteEndpoint runs holding `Fleet::changes`, and cancels the job
//! (flag, then abort) before it deletes. [`Job::commit`] and [`Job::publish`] take the same
//! lock and check the flag under it, so a job that finished building just as the endpoint
//! was deleted commits nothing: either its commit came first (and the delete then deletes
//! it), or the delete did (and the job drops what it built). Every background commit waits
//! its turn on `changes`, behind the control-plane change being made, if any.

use super::assemble::commit_logged;
use super::deployer::Fleet;
use super::table::EndpointSnapshot;
use super::tasks::{spawn_guarded, Ticket};
use std::future::Future;
use std::sync::Arc;

/// One background task's hold on an endpoint it changes.
#[derive(Clone)]
pub(crate) struct Job {
    state: Arc<Fleet>,
    ticket: Ticket,
}

impl Job {
    /// Claim `endpoint` for a new background task (call it holding `Fleet::changes`, as the
    /// operations and the start-up do, or before the server listens).
    pub(crate) fn claim(state: &Arc<Fleet>, endpoint: &str) -> Self {
        Self {
            state: state.clone(),
            ticket: state.tasks.claim(endpoint),
        }
    }

    /// The fleet the job works on.
    pub(crate) fn state(&self) -> &Arc<Fleet> {
        &self.state
    }

    /// The endpoint the job changes.
    pub(crate) fn endpoint(&self) -> &str {
        self.ticket.endpoint()
    }

    /// The endpoint was deleted: nothing more of this job may become visible.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.ticket.is_cancelled()
    }

    /// Run `work` in the background under the guard; if it panics, `recover` runs with a
    /// job of its own and the panic's message, to settle the endpoint.
    pub(crate) fn spawn<W, R, F>(self, work: W, recover: R)
    where
        W: Future<Output = ()> + Send + 'static,
        R: FnOnce(Job, String) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let endpoint = self.ticket.endpoint().to_string();
        let after = self.clone();
        spawn_guarded(
            &self.state.tasks,
            self.ticket,
            async move {
                at_start(&endpoint);
                work.await
            },
            move |message| recover(after, message),
        );
    }

    /// Commit `snapshot` with its event and publish it ([`commit_logged`]), unless the
    /// endpoint was deleted: checked under `Fleet::changes`, the lock DeleteEndpoint holds.
    /// Whether it was committed; when not, `snapshot` (and any pool only it holds) is dropped.
    pub(crate) async fn commit(&self, snapshot: EndpointSnapshot, message: &str) -> bool {
        before_commit(&snapshot).await;
        let _exclusive = self.state.changes.lock().await;
        if self.dropped() {
            return false;
        }
        commit_logged(&self.state, snapshot, message);
        true
    }

    /// Publish `snapshot` without committing it (a restore that failed: the next start
    /// tries again), unless the endpoint was deleted. Whether it was published.
    pub(crate) async fn publish(&self, snapshot: EndpointSnapshot) -> bool {
        before_commit(&snapshot).await;
        let _exclusive = self.state.changes.lock().await;
        if self.dropped() {
            return false;
        }
        self.state.endpoints.publish(snapshot);
        true
    }

    /// Whether the job is cancelled (logged, for a state it will not commit).
    fn dropped(&self) -> bool {
        let cancelled = self.is_cancelled();
        if cancelled {
            tracing::info!(endpoint = %self.ticket.endpoint(), "the endpoint was deleted: what its background task made is dropped");
        }
        cancelled
    }
}

// The test-only injection points (`test_hooks.rs`); nothing in a build that is not a test.

#[cfg(not(test))]
fn at_start(_endpoint: &str) {}

#[cfg(not(test))]
async fn before_commit(_snapshot: &EndpointSnapshot) {}

#[cfg(test)]
fn at_start(endpoint: &str) {
    super::test_hooks::at_start(endpoint);
}

#[cfg(test)]
async fn before_commit(snapshot: &EndpointSnapshot) {
    super::test_hooks::before_commit(snapshot).await;
}

/// The guard and the cancellation, end to end through the operations (`ops::call`, which
/// holds `Fleet::changes` as in the server): a panic injected in each kind of background
/// task, DeleteEndpoint while `Creating` and `Updating` (at the commit, with what was built
/// dropped), a commit that loses the race to a delete, and restores that do not wait for
/// one another. Real pools of the echo plugin, an in-memory store.
#[cfg(test)]
mod tests {
    use super::super::deploy;
    use super::super::test_hooks::{self, Hook};
    use super::*;
    use crate::state::store::EndpointRecord;
    use serde_json::{json, Value};
    use std::sync::Weak;
    use std::time::{Duration, Instant};

    /// How long an endpoint may take to settle.
    const SETTLE: Duration = Duration::from_secs(60);

    /// A fleet on an in-memory store with model `echo` and configs `one` (variant A) and
    /// `two` (variant B), one instance each.
    async fn fleet() -> (Arc<Fleet>, tempfile::TempDir) {
        let (fleet, artifacts) = crate::serve::in_memory_fleet().await;
        call(
            &fleet,
            "CreateModel",
            json!({"ModelName": "echo", "PrimaryContainer": {"Image": plinth_tests::ECHO_WASM}}),
        )
        .await;
        for (config, variant) in [("one", "A"), ("two", "B")] {
            call(
                &fleet,
                "CreateEndpointConfig",
                json!({"EndpointConfigName": config, "ProductionVariants": [
                    {"VariantName": variant, "ModelName": "echo"}]}),
            )
            .await;
        }
        (fleet, artifacts)
    }

    async fn call(fleet: &Arc<Fleet>, operation: &str, input: Value) -> Value {
        crate::ops::call(fleet, operation, input.clone())
            .await
            .unwrap_or_else(|e| panic!("{operation} {input}: {}", e.message()))
    }

    async fn describe(fleet: &Arc<Fleet>, endpoint: &str) -> Value {
        call(fleet, "DescribeEndpoint", json!({"EndpointName": endpoint})).await
    }

    /// DescribeEndpoint once the endpoint is neither `Creating`, `Updating` nor
    /// `RollingBack`.
    async fn settled(fleet: &Arc<Fleet>, endpoint: &str) -> Value {
        let deadline = Instant::now() + SETTLE;
        loop {
            let d = describe(fleet, endpoint).await;
            if !matches!(
                d["EndpointStatus"].as_str(),
                Some("Creating" | "Updating" | "RollingBack")
            ) {
                return d;
            }
            assert!(Instant::now() < deadline, "{endpoint} never settled: {d}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn create(fleet: &Arc<Fleet>, endpoint: &str, config: &str) {
        call(
            fleet,
            "CreateEndpoint",
            json!({"EndpointName": endpoint, "EndpointConfigName": config}),
        )
        .await;
    }

    async fn create_in_service(fleet: &Arc<Fleet>, endpoint: &str, config: &str) {
        create(fleet, endpoint, config).await;
        let d = settled(fleet, endpoint).await;
        assert_eq!(d["EndpointStatus"], "InService", "{d}");
    }

    fn reason(d: &Value) -> &str {
        d["FailureReason"].as_str().unwrap_or_default()
    }

    /// The endpoint is gone: from the table, the store, and the tasks.
    async fn gone(fleet: &Arc<Fleet>, endpoint: &str) {
        let e = crate::ops::call(fleet, "DescribeEndpoint", json!({"EndpointName": endpoint}))
            .await
            .expect_err("the endpoint is still there");
        assert!(
            e.message().starts_with("Could not find endpoint"),
            "{}",
            e.message()
        );
        let stored = fleet.stored.store.load().unwrap().endpoints;
        assert!(
            stored.iter().all(|r| r.name != endpoint),
            "{endpoint} is still in the store"
        );
        assert!(!fleet.tasks.is_running(endpoint));
    }

    /// Every pool is dropped (within a few seconds: the aborted task drops them).
    async fn dropped(pools: &[Weak<plinth_runtime::VariantPool>]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while pools.iter().any(|p| p.strong_count() > 0) {
            assert!(
                Instant::now() < deadline,
                "a pool built for a deleted endpoint leaked"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn panic_in(endpoint: &str, what: &str) {
        test_hooks::set(endpoint, Hook::Panic(format!("injected into {what}")));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_in_any_background_task_settles_the_endpoint() {
        let (fleet, _dir) = fleet().await;

        // Create: Failed, and deletable.
        panic_in("p-create", "the create");
        create(&fleet, "p-create", "one").await;
        let d = settled(&fleet, "p-create").await;
        assert_eq!(d["EndpointStatus"], "Failed", "{d}");
        assert!(reason(&d).contains("creating the endpoint panicked"), "{d}");
        assert!(reason(&d).contains("injected into the create"), "{d}");
        let stored = fleet.stored.store.load().unwrap().endpoints;
        assert!(stored
            .iter()
            .any(|r| r.name == "p-create" && r.status == "Failed"));
        call(
            &fleet,
            "DeleteEndpoint",
            json!({"EndpointName": "p-create"}),
        )
        .await;

        // Update: the old config keeps serving, and says why.
        create_in_service(&fleet, "p", "one").await;
        panic_in("p", "the update");
        call(
            &fleet,
            "UpdateEndpoint",
            json!({"EndpointName": "p", "EndpointConfigName": "two"}),
        )
        .await;
        let d = settled(&fleet, "p").await;
        assert_eq!(d["EndpointStatus"], "InService", "{d}");
        assert_eq!(d["EndpointConfigName"], "one", "{d}");
        assert!(d.get("PendingDeploymentSummary").is_none(), "{d}");
        assert!(
            reason(&d).contains("updating to endpoint configuration two panicked"),
            "{d}"
        );
        assert!(reason(&d).contains("injected into the update"), "{d}");
        assert_eq!(d["ProductionVariants"][0]["VariantName"], "A", "{d}");

        // UpdateEndpointWeightsAndCapacities: what runs stays, desired = current.
        panic_in("p", "the resize");
        call(
            &fleet,
            "UpdateEndpointWeightsAndCapacities",
            json!({"EndpointName": "p", "DesiredWeightsAndCapacities": [
                {"VariantName": "A", "DesiredInstanceCount": 2}]}),
        )
        .await;
        let d = settled(&fleet, "p").await;
        assert_eq!(d["EndpointStatus"], "InService", "{d}");
        assert!(
            reason(&d).contains("weights and instance counts panicked"),
            "{d}"
        );
        assert!(reason(&d).contains("injected into the resize"), "{d}");
        let v = &d["ProductionVariants"][0];
        assert_eq!(v["DesiredInstanceCount"], v["CurrentInstanceCount"], "{d}");

        // A deployment: rolled back to the old fleet.
        panic_in("p", "the deployment");
        call(
            &fleet,
            "UpdateEndpoint",
            json!({"EndpointName": "p", "EndpointConfigName": "two", "DeploymentConfig":
                {"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration":
                    {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0}}}}),
        )
        .await;
        let d = settled(&fleet, "p").await;
        assert_eq!(d["EndpointStatus"], "InService", "{d}");
        assert_eq!(d["EndpointConfigName"], "one", "{d}");
        assert!(d.get("PendingDeploymentSummary").is_none(), "{d}");
        assert!(reason(&d).contains("its task panicked"), "{d}");
        assert!(reason(&d).contains("injected into the deployment"), "{d}");

        // After all that, a plain update goes through.
        call(
            &fleet,
            "UpdateEndpoint",
            json!({"EndpointName": "p", "EndpointConfigName": "two"}),
        )
        .await;
        let d = settled(&fleet, "p").await;
        assert_eq!(d["EndpointConfigName"], "two", "{d}");
        assert!(d.get("FailureReason").is_none(), "{d}");

        // A restore: Failed until the next start (published, not committed).
        let record = restorable(&fleet, "p-restore");
        panic_in("p-restore", "the restore");
        deploy::recover(&fleet, vec![record]);
        let d = settled(&fleet, "p-restore").await;
        assert_eq!(d["EndpointStatus"], "Failed", "{d}");
        assert!(
            reason(&d).contains("restoring the endpoint after a restart panicked"),
            "{d}"
        );
        let stored = fleet.stored.store.load().unwrap().endpoints;
        assert!(stored
            .iter()
            .any(|r| r.name == "p-restore" && r.status == "InService"));
    }

    /// A stored `InService` record of `endpoint` on config `one`, as a restart finds it.
    fn restorable(fleet: &Fleet, endpoint: &str) -> EndpointRecord {
        let record = EndpointRecord {
            name: endpoint.to_string(),
            config_name: "one".to_string(),
            pending_config: None,
            status: "InService".to_string(),
            failure_reason: None,
            created: crate::state::now(),
            modified: crate::state::now(),
            capacities: Vec::new(),
            deployment_config: None,
        };
        fleet.stored.store.insert_endpoint(&record).unwrap();
        record
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delete_while_creating_cancels_the_build_and_keeps_nothing() {
        let (fleet, _dir) = fleet().await;
        let (reached, resume) = test_hooks::hold("d-create");
        create(&fleet, "d-create", "one").await;
        // Built and warmed, about to commit: the delete comes now.
        let pools = reached.await.unwrap();
        assert_eq!(pools.len(), 1);
        assert!(pools.iter().all(|p| p.strong_count() > 0));
        assert_eq!(
            describe(&fleet, "d-create").await["EndpointStatus"],
            "Creating"
        );
        call(
            &fleet,
            "DeleteEndpoint",
            json!({"EndpointName": "d-create"}),
        )
        .await;
        let _ = resume.send(());
        gone(&fleet, "d-create").await;
        dropped(&pools).await;
        // Nothing of the cancelled task comes back, and the name can be used again.
        tokio::time::sleep(Duration::from_millis(100)).await;
        gone(&fleet, "d-create").await;
        create_in_service(&fleet, "d-create", "two").await;
        assert_eq!(
            describe(&fleet, "d-create").await["EndpointConfigName"],
            "two"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delete_while_updating_cancels_the_update_and_keeps_nothing() {
        let (fleet, _dir) = fleet().await;
        create_in_service(&fleet, "d-update", "one").await;
        let old = Arc::downgrade(
            fleet.endpoints.get("d-update").unwrap().variants[0]
                .live
                .serving
                .single()
                .unwrap(),
        );
        let (reached, resume) = test_hooks::hold("d-update");
        call(
            &fleet,
            "UpdateEndpoint",
            json!({"EndpointName": "d-update", "EndpointConfigName": "two"}),
        )
        .await;
        let mut pools = reached.await.unwrap();
        assert_eq!(
            describe(&fleet, "d-update").await["EndpointStatus"],
            "Updating"
        );
        call(
            &fleet,
            "DeleteEndpoint",
            json!({"EndpointName": "d-update"}),
        )
        .await;
        let _ = resume.send(());
        gone(&fleet, "d-update").await;
        pools.push(old);
        dropped(&pools).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_that_loses_the_race_to_a_delete_commits_nothing() {
        let (fleet, _dir) = fleet().await;
        create_in_service(&fleet, "race", "one").await;
        let mut done = EndpointSnapshot::clone(&fleet.endpoints.get("race").unwrap());
        done.failure_reason = Some("committed after the delete".to_string());
        // A job that is past every `.await` but its commit's lock when the delete comes
        // (so no abort reaches it): only the flag, checked under the lock, stops it.
        let job = Job::claim(&fleet, "race");
        let exclusive = fleet.changes.lock().await;
        let committing = tokio::spawn({
            let job = job.clone();
            async move { job.commit(done, "too late").await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        deploy::delete_endpoint(&fleet, "race").unwrap();
        drop(exclusive);
        assert!(
            !committing.await.unwrap(),
            "the job committed after the delete"
        );
        assert!(job.is_cancelled());
        gone(&fleet, "race").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn restores_do_not_wait_for_one_another_and_a_restoring_endpoint_can_be_deleted() {
        let (fleet, _dir) = fleet().await;
        let slow = restorable(&fleet, "r-slow");
        let quick = restorable(&fleet, "r-quick");
        let gone_too = restorable(&fleet, "r-deleted");
        let (slow_reached, slow_resume) = test_hooks::hold("r-slow");
        let (deleted_reached, _deleted_resume) = test_hooks::hold("r-deleted");
        deploy::recover(&fleet, vec![slow, quick, gone_too]);
        // Each restoring endpoint is Creating, and cannot be changed meanwhile.
        for name in ["r-slow", "r-quick", "r-deleted"] {
            let d = describe(&fleet, name).await;
            assert!(
                matches!(d["EndpointStatus"].as_str(), Some("Creating" | "InService")),
                "{d}"
            );
        }
        let e = crate::ops::call(
            &fleet,
            "UpdateEndpoint",
            json!({"EndpointName": "r-slow", "EndpointConfigName": "two"}),
        )
        .await
        .expect_err("an update of a restoring endpoint");
        assert!(e.message().contains("in-progress"), "{}", e.message());
        // The quick one serves while the slow one is still held.
        let d = settled(&fleet, "r-quick").await;
        assert_eq!(d["EndpointStatus"], "InService", "{d}");
        slow_reached.await.unwrap();
        assert_eq!(
            describe(&fleet, "r-slow").await["EndpointStatus"],
            "Creating"
        );
        // Deleted while it is restored: gone, and its pools with it.
        let pools = deleted_reached.await.unwrap();
        call(
            &fleet,
            "DeleteEndpoint",
            json!({"EndpointName": "r-deleted"}),
        )
        .await;
        gone(&fleet, "r-deleted").await;
        dropped(&pools).await;
        // The slow one comes up once let go.
        slow_resume.send(()).unwrap();
        let d = settled(&fleet, "r-slow").await;
        assert_eq!(d["EndpointStatus"], "InService", "{d}");
    }
}
