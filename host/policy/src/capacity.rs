//! Validating SageMaker's `UpdateEndpointWeightsAndCapacities`: which variants change to
//! which weight and instance count, and whether the result can still route traffic.

use std::collections::HashSet;

/// One variant's requested change (`DesiredWeightAndCapacity`).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// `VariantName`.
    pub variant: String,
    /// `DesiredWeight`.
    pub weight: Option<f64>,
    /// `DesiredInstanceCount`.
    pub instance_count: Option<i64>,
    /// `ServerlessUpdateConfig`, for a serverless variant.
    pub serverless: Option<ServerlessUpdate>,
}

/// `ServerlessUpdateConfig`: a serverless variant's new `MaxConcurrency` and
/// `ProvisionedConcurrency` (either may be left as it is).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerlessUpdate {
    pub max_concurrency: Option<i64>,
    pub provisioned_concurrency: Option<i64>,
}

/// A serverless variant's concurrency settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerlessCapacity {
    pub max_concurrency: usize,
    pub provisioned_concurrency: usize,
}

/// The largest `MaxConcurrency` and `ProvisionedConcurrency` (SageMaker's).
pub const MAX_SERVERLESS_CONCURRENCY: i64 = 200;

/// A variant's weight and instance count.
#[derive(Debug, Clone, PartialEq)]
pub struct Capacity {
    /// The variant's name.
    pub variant: String,
    /// Its weight.
    pub weight: f64,
    /// Its instance count (a serverless variant's: those running now).
    pub instance_count: usize,
    /// A serverless variant's concurrency settings.
    pub serverless: Option<ServerlessCapacity>,
    /// A variant of an asynchronous endpoint: with no instance its jobs wait in the queue,
    /// so it may have 0 instances and keep its weight.
    pub queued: bool,
}

/// The largest instance count a variant may ask for.
pub const MAX_INSTANCE_COUNT: i64 = 1000;

/// Apply `changes` to `current`, or say why they are invalid. Unnamed variants keep their
/// values. A variant may have 0 instances only when its weight is 0, and at least one
/// variant must keep a positive weight.
pub fn apply(current: &[Capacity], changes: &[Change]) -> Result<Vec<Capacity>, String> {
    if changes.is_empty() {
        return Err("DesiredWeightsAndCapacities must name at least one variant".into());
    }
    let mut seen = HashSet::new();
    let mut next = current.to_vec();
    for change in changes {
        if !seen.insert(change.variant.as_str()) {
            return Err(format!(
                "variant {:?} is named more than once",
                change.variant
            ));
        }
        let Some(target) = next.iter_mut().find(|c| c.variant == change.variant) else {
            return Err(format!(
                "the endpoint has no variant named {:?}; its variants are {:?}",
                change.variant,
                current
                    .iter()
                    .map(|c| c.variant.as_str())
                    .collect::<Vec<_>>()
            ));
        };
        if change.weight.is_none() && change.instance_count.is_none() && change.serverless.is_none()
        {
            return Err(format!(
                "variant {:?}: give DesiredWeight, DesiredInstanceCount (ServerlessUpdateConfig \
                 for a serverless variant) or both",
                change.variant
            ));
        }
        match (
            &mut target.serverless,
            change.serverless,
            change.instance_count,
        ) {
            (Some(_), _, Some(_)) => {
                return Err(format!(
                    "variant {:?} is serverless: it has no instance count (its instances follow \
                     its requests up to MaxConcurrency); give ServerlessUpdateConfig instead of \
                     DesiredInstanceCount",
                    change.variant
                ))
            }
            (None, Some(_), _) => {
                return Err(format!(
                    "variant {:?} is not serverless: ServerlessUpdateConfig applies only to a \
                     variant with ServerlessConfig",
                    change.variant
                ))
            }
            (Some(settings), Some(update), _) => {
                for (name, value) in [
                    ("MaxConcurrency", update.max_concurrency),
                    ("ProvisionedConcurrency", update.provisioned_concurrency),
                ] {
                    if let Some(v) = value.filter(|v| !(1..=MAX_SERVERLESS_CONCURRENCY).contains(v))
                    {
                        return Err(format!(
                            "variant {:?}: ServerlessUpdateConfig.{name} {v} is out of range; \
                             use 1-{MAX_SERVERLESS_CONCURRENCY}",
                            change.variant
                        ));
                    }
                }
                if let Some(max) = update.max_concurrency {
                    settings.max_concurrency = max as usize;
                }
                if let Some(provisioned) = update.provisioned_concurrency {
                    settings.provisioned_concurrency = provisioned as usize;
                }
                if settings.provisioned_concurrency > settings.max_concurrency {
                    return Err(format!(
                        "variant {:?}: ProvisionedConcurrency {} must not be greater than \
                         MaxConcurrency {}",
                        change.variant, settings.provisioned_concurrency, settings.max_concurrency
                    ));
                }
            }
            _ => {}
        }
        if let Some(weight) = change.weight {
            if !weight.is_finite() || weight < 0.0 {
                return Err(format!(
                    "variant {:?}: DesiredWeight {weight} is not a weight; use a number >= 0",
                    change.variant
                ));
            }
            target.weight = weight;
        }
        if let Some(count) = change.instance_count {
            if !(0..=MAX_INSTANCE_COUNT).contains(&count) {
                return Err(format!(
                    "variant {:?}: DesiredInstanceCount {count} is out of range; use 0-{MAX_INSTANCE_COUNT}",
                    change.variant
                ));
            }
            target.instance_count = count as usize;
        }
    }
    for c in &next {
        // A serverless variant at zero instances starts one for its next request; an
        // asynchronous endpoint's jobs wait for one.
        if c.instance_count == 0 && c.weight > 0.0 && c.serverless.is_none() && !c.queued {
            return Err(format!(
                "variant {:?} would have 0 instances but weight {}; set its DesiredWeight to 0 as well",
                c.variant, c.weight
            ));
        }
    }
    if next.iter().all(|c| c.weight == 0.0) {
        return Err("every variant would have weight 0, so no request could be routed".into());
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current() -> Vec<Capacity> {
        vec![
            Capacity {
                variant: "A".into(),
                weight: 1.0,
                instance_count: 2,
                serverless: None,
                queued: false,
            },
            Capacity {
                variant: "B".into(),
                weight: 1.0,
                instance_count: 1,
                serverless: None,
                queued: false,
            },
        ]
    }

    fn change(v: &str, w: Option<f64>, n: Option<i64>) -> Change {
        Change {
            variant: v.into(),
            weight: w,
            instance_count: n,
            serverless: None,
        }
    }

    #[test]
    fn serverless_variants_change_their_concurrency_not_an_instance_count() {
        let sl = |max, provisioned| ServerlessCapacity {
            max_concurrency: max,
            provisioned_concurrency: provisioned,
        };
        let at_zero = vec![Capacity {
            variant: "S".into(),
            weight: 1.0,
            instance_count: 0,
            serverless: Some(sl(4, 0)),
            queued: false,
        }];
        let update = |max, provisioned| Change {
            variant: "S".into(),
            weight: None,
            instance_count: None,
            serverless: Some(ServerlessUpdate {
                max_concurrency: max,
                provisioned_concurrency: provisioned,
            }),
        };
        // At zero instances with a weight: fine for a serverless variant.
        let next = apply(&at_zero, &[change("S", Some(2.0), None)]).unwrap();
        assert_eq!(next[0].weight, 2.0);
        let next = apply(&at_zero, &[update(Some(10), Some(3))]).unwrap();
        assert_eq!(next[0].serverless, Some(sl(10, 3)));
        let next = apply(&at_zero, &[update(None, Some(4))]).unwrap();
        assert_eq!(next[0].serverless, Some(sl(4, 4)));
        for (bad, says) in [
            (
                update(None, Some(5)),
                "must not be greater than MaxConcurrency 4",
            ),
            (
                update(Some(201), None),
                "MaxConcurrency 201 is out of range",
            ),
            (update(Some(0), None), "MaxConcurrency 0 is out of range"),
            (change("S", None, Some(2)), "is serverless"),
        ] {
            let e = apply(&at_zero, &[bad]).unwrap_err();
            assert!(e.contains(says), "{says:?} not in {e}");
        }
        let e = apply(
            &current(),
            &[Change {
                variant: "A".into(),
                ..update(Some(2), None)
            }],
        )
        .unwrap_err();
        assert!(e.contains("is not serverless"), "{e}");
    }

    #[test]
    fn applies_weights_and_counts() {
        let next = apply(&current(), &[change("B", Some(3.0), Some(4))]).unwrap();
        assert_eq!(next[0], current()[0]);
        assert_eq!(next[1].weight, 3.0);
        assert_eq!(next[1].instance_count, 4);
    }

    #[test]
    fn zero_instances_only_with_zero_weight() {
        let e = apply(&current(), &[change("B", None, Some(0))]).unwrap_err();
        // An asynchronous endpoint's variant keeps its weight at 0 instances: its jobs wait.
        let queued: Vec<Capacity> = current()
            .into_iter()
            .map(|c| Capacity { queued: true, ..c })
            .collect();
        let next = apply(&queued, &[change("B", None, Some(0))]).unwrap();
        assert_eq!((next[1].instance_count, next[1].weight), (0, 1.0));
        assert!(e.contains("0 instances but weight 1"), "{e}");
        let next = apply(&current(), &[change("B", Some(0.0), Some(0))]).unwrap();
        assert_eq!(next[1].instance_count, 0);
    }

    #[test]
    fn rejects_bad_input() {
        for (changes, expected) in [
            (vec![change("C", Some(1.0), None)], "no variant named \"C\""),
            (vec![change("A", Some(-1.0), None)], "-1 is not a weight"),
            (
                vec![change("A", Some(f64::NAN), None)],
                "NaN is not a weight",
            ),
            (vec![change("A", None, Some(-2))], "-2 is out of range"),
            (vec![change("A", None, None)], "give DesiredWeight"),
            (
                vec![change("A", Some(1.0), None), change("A", Some(2.0), None)],
                "more than once",
            ),
            (
                vec![change("A", Some(0.0), None), change("B", Some(0.0), None)],
                "every variant would have weight 0",
            ),
            (vec![], "at least one variant"),
        ] {
            let e = apply(&current(), &changes).unwrap_err();
            assert!(e.contains(expected), "expected {expected:?} in {e:?}");
        }
    }
}
