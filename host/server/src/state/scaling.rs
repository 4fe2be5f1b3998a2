//! Application Auto Scaling's scalable targets and their scaling policies
//! (RegisterScalableTarget, PutScalingPolicy), kept in memory for the controller and the
//! Describe operations, over the store that keeps them across restarts. Every change here
//! follows a committed store write. Scaling activities live in the store only.

use super::store::{ScalingRow, ScalingRows, Store, StoreError};
use plinth_policy::autoscaling::{Compiled, Dimension, ResourceId, ScalableTarget, ScalingPolicy};
use plinth_policy::target_tracking::Invalid;
use std::collections::BTreeMap;

/// A scalable target's key: the variant and the dimension.
pub(crate) type TargetKey = (ResourceId, Dimension);

/// A registered target and its policies.
#[derive(Debug, Clone)]
pub(crate) struct TargetRecord {
    pub(crate) target: ScalableTarget,
    /// Epoch seconds, of the first registration.
    pub(crate) created: f64,
    pub(crate) policies: BTreeMap<String, PolicyRecord>,
}

/// A scaling policy, and what the controller runs of it.
#[derive(Debug, Clone)]
pub(crate) struct PolicyRecord {
    pub(crate) policy: ScalingPolicy,
    /// Checked when it was put; a stored policy this build refuses does not run.
    pub(crate) compiled: Result<Compiled, Invalid>,
    /// Epoch seconds.
    pub(crate) created: f64,
}

/// Every scalable target, by key.
#[derive(Debug, Default)]
pub(crate) struct Scaling {
    pub(crate) targets: BTreeMap<TargetKey, TargetRecord>,
}

impl Scaling {
    /// The targets and policies as stored.
    pub(crate) fn from_stored(rows: ScalingRows) -> Result<Self, serde_json::Error> {
        let mut scaling = Self::default();
        for row in rows.targets {
            let target: ScalableTarget = serde_json::from_value(row.definition)?;
            let key = (target.resource_id.clone(), target.scalable_dimension);
            scaling.targets.insert(
                key,
                TargetRecord {
                    target,
                    created: row.created,
                    policies: BTreeMap::new(),
                },
            );
        }
        for row in rows.policies {
            let policy: ScalingPolicy = serde_json::from_value(row.definition)?;
            let key = (policy.resource_id.clone(), policy.scalable_dimension);
            // A policy is deleted with its target, in one transaction.
            if let Some(target) = scaling.targets.get_mut(&key) {
                let compiled = policy.compile();
                if let Err(e) = &compiled {
                    tracing::warn!(policy = %policy.policy_name, error = %e, "a stored scaling policy is not valid in this build; it does not run");
                }
                target.policies.insert(
                    policy.policy_name.clone(),
                    PolicyRecord {
                        policy,
                        compiled,
                        created: row.created,
                    },
                );
            }
        }
        Ok(scaling)
    }

    /// Register (or update) a target: committed, then kept.
    pub(crate) fn put_target(
        &mut self,
        store: &Store,
        target: ScalableTarget,
        now: f64,
    ) -> Result<(), StoreError> {
        let key = (target.resource_id.clone(), target.scalable_dimension);
        let created = self.targets.get(&key).map_or(now, |t| t.created);
        store.put_scaling(&ScalingRow {
            resource_id: target.resource_id.to_string(),
            dimension: target.scalable_dimension.as_str().to_owned(),
            name: None,
            created,
            definition: serde_json::to_value(&target)?,
        })?;
        match self.targets.get_mut(&key) {
            Some(record) => record.target = target,
            None => {
                self.targets.insert(
                    key,
                    TargetRecord {
                        target,
                        created,
                        policies: BTreeMap::new(),
                    },
                );
            }
        }
        Ok(())
    }

    /// Deregister a target and delete its policies; whether it was registered.
    pub(crate) fn delete_target(
        &mut self,
        store: &Store,
        key: &TargetKey,
    ) -> Result<bool, StoreError> {
        store.delete_scaling(&key.0.to_string(), key.1.as_str(), None)?;
        Ok(self.targets.remove(key).is_some())
    }

    /// The targets on `endpoint`'s variants.
    pub(crate) fn targets_of(&self, endpoint: &str) -> Vec<TargetKey> {
        self.targets
            .keys()
            .filter(|(r, _)| r.endpoint == endpoint)
            .cloned()
            .collect()
    }

    /// Deregister every target on `endpoint`'s variants (it is deleted); how many there were.
    pub(crate) fn delete_endpoint_targets(
        &mut self,
        store: &Store,
        endpoint: &str,
    ) -> Result<usize, StoreError> {
        let keys = self.targets_of(endpoint);
        for key in &keys {
            self.delete_target(store, key)?;
        }
        Ok(keys.len())
    }

    /// Put a checked policy on its (registered) target, replacing one of the same name.
    pub(crate) fn put_policy(
        &mut self,
        store: &Store,
        policy: ScalingPolicy,
        compiled: Compiled,
        now: f64,
    ) -> Result<(), StoreError> {
        let key = (policy.resource_id.clone(), policy.scalable_dimension);
        let Some(target) = self.targets.get_mut(&key) else {
            return Ok(());
        };
        let created = target
            .policies
            .get(&policy.policy_name)
            .map_or(now, |p| p.created);
        store.put_scaling(&ScalingRow {
            resource_id: key.0.to_string(),
            dimension: key.1.as_str().to_owned(),
            name: Some(policy.policy_name.clone()),
            created,
            definition: serde_json::to_value(&policy)?,
        })?;
        target.policies.insert(
            policy.policy_name.clone(),
            PolicyRecord {
                policy,
                compiled: Ok(compiled),
                created,
            },
        );
        Ok(())
    }

    /// Delete a policy; whether it was there.
    pub(crate) fn delete_policy(
        &mut self,
        store: &Store,
        key: &TargetKey,
        name: &str,
    ) -> Result<bool, StoreError> {
        let Some(target) = self.targets.get_mut(key) else {
            return Ok(false);
        };
        if !target.policies.contains_key(name) {
            return Ok(false);
        }
        store.delete_scaling(&key.0.to_string(), key.1.as_str(), Some(name))?;
        target.policies.remove(name);
        Ok(true)
    }
}
